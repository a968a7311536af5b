"""Flatness of (pruned) networks: Hessian trace / top eigenvalue, 1-D landscape, expected sharpness.

All functions work on any ``nn.Module``, masked with ``torch.nn.utils.prune`` or not; the measured space is
always that of the unpruned weights (``parameters_to_perturb``): Hessians are ``M H M``, perturbations
never touch pruned weights (paper 000 §3.2, §4.1 Measure 1, §4.2).

* :func:`pyhessian_trace_eigen` -- PyHessian (Hutchinson trace, power iteration), as in paper 000.
* :func:`fast_trace_eigen` -- exact GGN-diagonal trace (piecewise-linear nets) + Lanczos eigenpairs.
* :func:`exact_hessian` / :func:`exact_trace_and_top_eig` -- dense reference for tiny nets.
* :func:`loss_landscape_1d` / :func:`save_landscape` -- paper 000 Fig. 2.
* :func:`expected_sharpness` -- paper 000 §4.2.
* :func:`weight_noise_robustness` -- relative accuracy drop under weight noise, paper 004 Fig. 2 (right).
* :func:`linear_path_errors` / :func:`error_barrier` -- linear mode connectivity (Frankle et al. 2020).
* :func:`measure_flatness` -- all of the above as a flat dict of scalars for the IMP trainable.
"""

from ._util import PerturbableParams, parameters_to_perturb
from .connectivity import error_barrier, interpolate, linear_path_errors
from .exact import exact_hessian, exact_trace_and_top_eig
from .fast import (
                   HessianOperator,
                   NotPiecewiseLinearError,
                   check_piecewise_linear,
                   fast_trace_eigen,
                   ggn_diagonal,
                   ggn_trace,
                   lanczos,
                   lanczos_top_eig,
)
from .hessian import HessianStats, pyhessian_trace_eigen
from .landscape import loss_landscape_1d, save_landscape
from .measure import measure_flatness
from .robustness import NoiseDrop, weight_noise_robustness
from .sharpness import SharpnessResult, expected_sharpness

__all__ = [
                   "HessianOperator",
                   "HessianStats",
                   "NoiseDrop",
                   "NotPiecewiseLinearError",
                   "PerturbableParams",
                   "SharpnessResult",
                   "check_piecewise_linear",
                   "error_barrier",
                   "exact_hessian",
                   "exact_trace_and_top_eig",
                   "expected_sharpness",
                   "fast_trace_eigen",
                   "ggn_diagonal",
                   "ggn_trace",
                   "interpolate",
                   "lanczos",
                   "lanczos_top_eig",
                   "linear_path_errors",
                   "loss_landscape_1d",
                   "measure_flatness",
                   "parameters_to_perturb",
                   "pyhessian_trace_eigen",
                   "save_landscape",
                   "weight_noise_robustness",
]
