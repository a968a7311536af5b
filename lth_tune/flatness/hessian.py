"""Hessian trace and top eigenvalue(s) through PyHessian (Yao et al. 2020), as in paper 000 Table 1 / Fig. 2.

PyHessian 0.1 works with modern torch for ``trace`` and ``eigenvalues`` (``density`` uses the removed
``torch.eig`` and is not wrapped).  The wrapper takes care of what PyHessian leaves to the caller:

* it calls ``model.eval()`` and never restores the mode -> we restore every submodule's flag;
* in single-batch mode it calls ``loss.backward(create_graph=True)``, which accumulates into (and
  keeps a graph on) ``.grad`` -> we clear ``.grad`` before (stale gradients would be added to the
  gradient it differentiates) and after (breaks the param <-> grad reference cycle);
* ``cuda=True`` means "``.cuda()``", i.e. the *current* CUDA device -> we pass ``cuda`` from the
  model's device, make that device current and move the data there ourselves;
* it draws probes from the global RNG -> we fork the RNG and seed it (``seed``);
* ``trace()`` returns the raw Hutchinson samples -> we report their mean and standard error.

Pruned networks: differentiating w.r.t. ``weight_orig`` gives the Hessian ``M H M`` (M = diag(mask)),
whose trace and spectrum are those of the Hessian restricted to the unpruned weights.  Eigenvectors are
projected onto the mask (they are zero at pruned positions up to round-off anyway).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lth_tune.models import eval_mode, model_device
from lth_tune.seeding import fork_rng

from ._util import (
    PerturbableParams,
    as_batches,
    clear_grads,
    cuda_device,
    parameters_to_perturb,
)

__all__ = ["HessianStats", "PerturbableParams", "parameters_to_perturb", "pyhessian_trace_eigen"]


@dataclass
class HessianStats:
    """Result of a Hessian measurement (any method).

    ``trace_se`` is the standard error of the Hutchinson mean over ``n_probes`` probes (0.0 for an exact
    method).  ``eigenvectors[k]`` is a list of tensors shaped like the perturbable parameters
    (``parameters_to_perturb(model).params``), unit norm, zero at pruned positions.
    """

    method: str
    trace: float | None = None
    trace_se: float | None = None
    n_probes: int = 0
    trace_samples: list[float] = field(default_factory=list, repr=False)
    top_eigenvalues: list[float] = field(default_factory=list)
    eigenvectors: list[list[Tensor]] = field(default_factory=list, repr=False)
    n_hvp: int = 0
    seconds: float = 0.0
    trace_seconds: float = 0.0
    eig_seconds: float = 0.0

    @property
    def top_eig(self) -> float | None:
        return self.top_eigenvalues[0] if self.top_eigenvalues else None

    @property
    def eigenvector(self) -> list[Tensor] | None:
        return self.eigenvectors[0] if self.eigenvectors else None


def _pyhessian():
    try:
        from pyhessian import hessian as _hessian_cls
    except ImportError as e:  # pragma: no cover - dependency declared in pyproject
        raise ImportError("pyhessian is required: pip install pyhessian") from e
    return _hessian_cls


def mean_and_se(samples: list[float]) -> tuple[float, float]:
    arr = np.asarray(samples, dtype=np.float64)
    mean = float(arr.mean())
    se = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else float("nan")
    return mean, se


def pyhessian_trace_eigen(model: nn.Module, criterion, data: Any, *, n_batches: int | None = None,
                          batch_size: int | None = None, trace_iters: int = 100, eig_iters: int = 100,
                          tol: float = 1e-3, trace_tol: float | None = None, eig_tol: float | None = None,
                          top_n: int = 1, compute_trace: bool = True, compute_eigen: bool = True,
                          seed: int | None = 0) -> HessianStats:
    """Hessian trace (Hutchinson, Rademacher probes) and top eigenpair(s) (power iteration) via PyHessian.

    ``data``: one batch ``(x, y)``, an iterable of batches or a ``Split`` (cut into ``batch_size``
    batches; at most ``n_batches`` are used).  One batch uses PyHessian's ``data=`` mode (gradient graph
    reused across Hessian-vector products), several its ``dataloader=`` mode (size-weighted mean).
    ``trace_iters``/``eig_iters``/``tol`` are PyHessian's ``maxIter``/``tol`` (defaults = PyHessian's:
    100 and 1e-3; ``trace_tol``/``eig_tol`` override ``tol`` for one of them; ``tol=0`` runs all
    iterations).  The criterion must average over the batch.
    """
    hessian_cls = _pyhessian()
    device = model_device(model)
    batches = as_batches(data, batch_size=batch_size, n_batches=n_batches, device=device)
    trace_tol = tol if trace_tol is None else trace_tol
    eig_tol = tol if eig_tol is None else eig_tol
    space = parameters_to_perturb(model)
    out = HessianStats(method="pyhessian")
    t_start = time.perf_counter()
    with eval_mode(model), cuda_device(device), fork_rng(seed, device), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*backward\(\) with create_graph=True.*")
        clear_grads(model)
        hook = None
        try:
            if len(batches) == 1:
                comp = hessian_cls(model, criterion, data=batches[0], cuda=device.type == "cuda")
            else:
                comp = hessian_cls(model, criterion, dataloader=batches, cuda=device.type == "cuda")
            # count Hessian-vector products: every gradient w.r.t. one parameter fires its tensor hook
            # (data mode: one per product; dataloader mode: a backward + a product per batch)
            fired = [0]
            hook = space.params[-1].register_hook(lambda g: fired.__setitem__(0, fired[0] + 1))
            per_hvp = 1 if len(batches) == 1 else 2 * len(batches)
            if compute_trace:
                t0 = time.perf_counter()
                samples = [float(s) for s in comp.trace(maxIter=trace_iters, tol=trace_tol)]
                out.trace_seconds = time.perf_counter() - t0
                out.trace_samples = samples
                out.n_probes = len(samples)
                out.trace, out.trace_se = mean_and_se(samples)
            if compute_eigen:
                t0 = time.perf_counter()
                eigvals, eigvecs = comp.eigenvalues(maxIter=eig_iters, tol=eig_tol, top_n=top_n)
                out.eig_seconds = time.perf_counter() - t0
                out.top_eigenvalues = [float(e) for e in eigvals]
                out.eigenvectors = [_project_unit(v, space) for v in eigvecs]
            out.n_hvp = fired[0] // per_hvp
        finally:
            comp = None  # drop PyHessian's references to the gradient graph
            if hook is not None:
                hook.remove()
            clear_grads(model)
    out.seconds = time.perf_counter() - t_start
    return out


def _project_unit(vec: list[Tensor], space: PerturbableParams) -> list[Tensor]:
    """Mask ``vec`` (zero at pruned positions) and renormalise it to unit norm."""
    v = [t.detach() * m for t, m in zip(vec, space.masks)]
    norm = torch.sqrt(sum((t.double() ** 2).sum() for t in v))
    if float(norm) > 0:
        v = [(t / norm.to(t.dtype)).clone() for t in v]
    return v
