"""Linear mode connectivity (Frankle, Dziugaite, Roy & Carbin 2020, "Linear mode connectivity and the lottery
ticket hypothesis", §2).

For two networks θ_A, θ_B of the same architecture and mask, the error along the straight line

    E(α) = err((1 − α) θ_A + α θ_B),   α ∈ [0, 1],

has the *error barrier height* ``max_α E(α) − ½ (E(0) + E(1))`` (their eq. 1). Two copies trained from the
same point with different SGD noise are *stable* (linearly connected) when the barrier is ≈ 0; IMP finds
matching subnetworks only where the training is stable to SGD noise. The same quantity along the line from
the rewind point to the trained ticket describes the path from initialisation (paper 000 §3.3's distance
from the initial weights, seen through the error).

Parameters and floating-point buffers (BatchNorm running statistics) are interpolated alike; masks are
not state here (both networks carry the same mask, which the model applies).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from lth_tune.data import Split
from lth_tune.pruning import copy_model, refresh_all
from lth_tune.training import evaluate

__all__ = ["error_barrier", "interpolate", "linear_path_errors"]


def interpolate(a: Mapping[str, Tensor], b: Mapping[str, Tensor], alpha: float) -> dict[str, Tensor]:
    """``(1 − α) a + α b`` for every floating-point entry present in both; other entries are taken from ``a``."""
    out = {}
    for k, va in a.items():
        vb = b.get(k)
        if vb is not None and va.is_floating_point():
            out[k] = torch.lerp(va, vb.to(va.device, va.dtype), float(alpha))
        else:
            out[k] = va
    return out


def linear_path_errors(model: nn.Module, a: Mapping[str, Tensor], b: Mapping[str, Tensor], split: Split,
                       alphas: Sequence[float]) -> list[float]:
    """0–1 error of ``model`` (a copy; the original is untouched) on ``split`` at each point of the line
    from state ``a`` (α = 0) to state ``b`` (α = 1). States are ``state_dict``-style (a subset is enough,
    e.g. :func:`lth_tune.pruning.snapshot`)."""
    probe = copy_model(model)
    errors = []
    for alpha in alphas:
        probe.load_state_dict(interpolate(a, b, alpha), strict=False)
        refresh_all(probe)
        _, acc = evaluate(probe, split)
        errors.append(1.0 - acc)
    return errors


def error_barrier(errors: Sequence[float]) -> float:
    """Frankle et al. (2020) eq. 1: ``max_α E(α) − ½ (E(0) + E(1))`` for errors sampled along the line
    (first and last entries are the endpoints)."""
    if len(errors) < 2:
        raise ValueError("an error barrier needs at least the two endpoints")
    return float(max(errors) - 0.5 * (errors[0] + errors[-1]))
