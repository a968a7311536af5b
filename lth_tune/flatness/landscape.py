"""1-D training-loss landscape along a direction in the unpruned-weight space (paper 000 Fig. 2).

``L(θ + α d)`` for ``d`` the unit-norm (over unpruned weights) top Hessian eigenvector; pruned weights are
never moved (the direction is masked), and every parameter is restored bit-exactly afterwards.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lth_tune.models import eval_mode, model_device

from ._util import as_batches, dataset_loss, parameters_to_perturb

__all__ = ["loss_landscape_1d", "save_landscape"]


def loss_landscape_1d(model: nn.Module, criterion, data: Any, direction: Sequence[Tensor],
                      alphas: Sequence[float] | Tensor | np.ndarray, *, normalize: bool = True,
                      batch_size: int | None = None, n_batches: int | None = None,
                      train_mode: bool = False) -> np.ndarray:
    """Mean loss over ``data`` at ``θ + α·d`` for each ``α`` in ``alphas`` (float64 array, same order).

    ``direction`` is a list of tensors shaped like ``parameters_to_perturb(model).params`` (e.g.
    ``HessianStats.eigenvector``); it is masked to the unpruned weights and, with ``normalize``, scaled to
    unit norm there.  Evaluated in eval mode (``train_mode=True``: train mode, e.g. batch-statistics BN);
    the previous modes and the exact parameter values are restored afterwards.
    """
    device = model_device(model)
    batches = as_batches(data, batch_size=batch_size, n_batches=n_batches, device=device)
    space = parameters_to_perturb(model)
    if len(direction) != len(space.params):
        raise ValueError(f"direction has {len(direction)} tensors, model has {len(space.params)} parameters")
    d = [t.detach().to(device=p.device, dtype=p.dtype).reshape(p.shape) * m
         for t, p, m in zip(direction, space.params, space.masks)]
    if normalize:
        norm = float(torch.sqrt(sum((t.double() ** 2).sum() for t in d)))
        if norm == 0.0:
            raise ValueError("direction is zero on the unpruned weights")
        d = [t / norm for t in d]
    saved = [p.detach().clone() for p in space.params]
    losses = np.empty(len(alphas), dtype=np.float64)
    try:
        with eval_mode(model, training=train_mode), torch.no_grad():
            for j, alpha in enumerate(alphas):
                for p, p0, dt in zip(space.params, saved, d):
                    p.copy_(p0 + float(alpha) * dt)
                losses[j] = dataset_loss(model, criterion, batches)
    finally:
        with torch.no_grad():
            for p, p0 in zip(space.params, saved):
                p.copy_(p0)
    return losses


def save_landscape(path_prefix: str | Path, alphas: Sequence[float], losses: Sequence[float],
                   title: str = "") -> tuple[Path, Path]:
    """Write ``<prefix>.csv`` (columns ``alpha,loss``) and ``<prefix>.png``; returns both paths.

    Uses matplotlib's Agg canvas directly (no global backend switch, works headless).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    prefix = Path(path_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    csv_path = prefix.with_name(prefix.name + ".csv")
    png_path = prefix.with_name(prefix.name + ".png")
    alphas = [float(a) for a in alphas]
    losses = [float(v) for v in losses]
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["alpha", "loss"])
        for a, v in zip(alphas, losses):
            w.writerow([repr(a), repr(v)])
    fig = Figure(figsize=(4.5, 3.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(alphas, losses, marker="o", markersize=3)
    ax.set_xlabel("α (unit top-eigenvector direction, unpruned weights)")
    ax.set_ylabel("training loss")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path)
    return csv_path, png_path
