"""One call for the IMP trainable: the requested flatness measurements as a flat dict of scalars."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lth_tune.models import model_device

from ._util import as_batches
from .fast import NotPiecewiseLinearError, check_piecewise_linear, ggn_trace, lanczos_top_eig
from .hessian import HessianStats, pyhessian_trace_eigen
from .landscape import loss_landscape_1d, save_landscape
from .sharpness import expected_sharpness

__all__ = ["DEFAULT_ALPHAS", "measure_flatness"]

DEFAULT_ALPHAS = tuple(float(a) for a in np.linspace(-1.0, 1.0, 21))


def _trace_fast_possible(model: nn.Module, criterion) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_piecewise_linear(model, criterion, unknown="ignore")
        return True
    except (NotPiecewiseLinearError, NotImplementedError) as e:
        warnings.warn(f"fast (GGN-diagonal) trace not exact for this model/loss ({e}); using PyHessian",
                      stacklevel=3)
        return False


def measure_flatness(model: nn.Module, criterion, data: Any, *, trace: bool = True, top_eig: bool = True,
                     landscape: bool = False, sharpness_sigma: float | None = None,
                     method: str = "fast", n_batches: int | None = None, batch_size: int | None = None,
                     trace_iters: int = 100, eig_iters: int = 100, tol: float = 1e-3, top_n: int = 1,
                     sharpness_samples: int = 32, landscape_alphas=DEFAULT_ALPHAS,
                     artefacts_dir: str | Path | None = None, artefact_prefix: str = "landscape",
                     title: str = "", seed: int = 0, levels: Any = None) -> dict[str, Any]:
    """Compute the requested subset of {trace, top_eig, landscape, sharpness} on ``data``.

    ``data``: ``(x, y)``, batches or a ``Split``; cut into ``batch_size`` batches, ``n_batches`` used.
    ``method``: ``"fast"`` -- exact GGN-diagonal trace (falls back to PyHessian with a warning when the
    model/loss is not piecewise linear) and Lanczos eigenpairs; ``"pyhessian"`` -- PyHessian's
    Hutchinson trace (``trace_iters``, ``tol``) and power iteration (``eig_iters``, ``tol``) as in paper 000.
    Landscape uses the top eigenvector (computed even if ``top_eig`` is False).  Sharpness is measured
    when ``sharpness_sigma`` is given.  ``levels`` is accepted and ignored (so that
    ``**FlatnessConfig.model_dump()`` can be passed).

    Returns scalars: ``hessian_trace``, ``hessian_trace_se`` (0 for the exact trace),
    ``hessian_trace_probes``, ``hessian_trace_seconds``, ``hessian_top_eig`` (+ ``hessian_top_eig_<k>``
    for k >= 2), ``hessian_top_eig_seconds``, ``landscape_loss0``, ``landscape_max_increase``,
    ``expected_sharpness``, ``expected_sharpness_se``, ``expected_sharpness_sigma``; with ``artefacts_dir``
    and ``landscape`` also the paths ``landscape_csv`` / ``landscape_png`` (strings).
    """
    if method not in ("fast", "pyhessian"):
        raise ValueError(f"method must be 'fast' or 'pyhessian', got {method!r}")
    device = model_device(model)
    batches = as_batches(data, batch_size=batch_size, n_batches=n_batches, device=device)
    out: dict[str, Any] = {}
    need_eig = top_eig or landscape
    stats: HessianStats | None = None

    if trace:
        if method == "fast" and _trace_fast_possible(model, criterion):
            tr = ggn_trace(model, criterion, batches, check=False)
        else:
            tr = pyhessian_trace_eigen(model, criterion, batches, trace_iters=trace_iters, tol=tol,
                                       compute_eigen=False, seed=seed)
        out["hessian_trace"] = tr.trace
        out["hessian_trace_se"] = tr.trace_se if tr.trace_se is not None and not math.isnan(tr.trace_se) else 0.0
        out["hessian_trace_probes"] = tr.n_probes
        out["hessian_trace_seconds"] = tr.trace_seconds
    if need_eig:
        if method == "fast":
            stats = lanczos_top_eig(model, criterion, batches, top_n=top_n, max_iter=eig_iters, tol=tol,
                                    seed=seed)
        else:
            stats = pyhessian_trace_eigen(model, criterion, batches, eig_iters=eig_iters, tol=tol,
                                          top_n=top_n, compute_trace=False, seed=seed)
        out["hessian_top_eig"] = stats.top_eigenvalues[0]
        for k, ev in enumerate(stats.top_eigenvalues[1:], start=2):
            out[f"hessian_top_eig_{k}"] = ev
        out["hessian_top_eig_seconds"] = stats.eig_seconds
    if landscape:
        assert stats is not None and stats.eigenvector is not None
        alphas = [float(a) for a in landscape_alphas]
        losses = loss_landscape_1d(model, criterion, batches, stats.eigenvector, alphas)
        i0 = int(np.argmin(np.abs(np.asarray(alphas))))
        out["landscape_loss0"] = float(losses[i0])
        out["landscape_max_increase"] = float(np.max(losses) - losses[i0])
        # the curve itself travels with the results (results.csv) so Figure 2 needs no trial files
        out["landscape_alphas"] = json.dumps(alphas)
        out["landscape_losses"] = json.dumps([float(v) for v in losses])
        if artefacts_dir is not None:
            csv_path, png_path = save_landscape(Path(artefacts_dir) / artefact_prefix, alphas, losses,
                                                title or "1-D loss along top Hessian eigenvector")
            out["landscape_csv"], out["landscape_png"] = str(csv_path), str(png_path)
    if sharpness_sigma is not None:
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
        sh = expected_sharpness(model, criterion, batches, sharpness_sigma, sharpness_samples, gen)
        out["expected_sharpness"] = sh.value
        out["expected_sharpness_se"] = sh.se
        out["expected_sharpness_sigma"] = float(sharpness_sigma)
    return out
