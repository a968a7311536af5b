"""Robustness to weight noise (paper 004 §4, Figure 2 right).

    drop(v²) = (acc(θ) − E_ζ[acc(θ + v ζ ⊙ m)]) / acc(θ),   ζ_i ~ N(0, 1) i.i.d.

The relative drop in accuracy of a deterministic network when every weight it uses is perturbed with Gaussian
noise of variance v² (``W_i → W_i + v ζ_i``). Pruned weights stay exactly zero (``m`` is the pruning mask), so a
pruned network is perturbed as the sparse network it is; a dense one in all of its weights. Accuracy in eval mode
over all of ``data``; the expectation by Monte Carlo over ``draws`` noise draws, reported with its standard error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lth_tune.models import eval_mode, model_device

from ._util import as_batches, parameters_to_perturb

__all__ = ["NoiseDrop", "weight_noise_robustness"]


@dataclass(frozen=True)
class NoiseDrop:
    variance: float       # v²
    accuracy: float       # mean accuracy of the perturbed networks
    drop: float           # (acc(θ) − accuracy) / acc(θ)
    drop_se: float        # Monte-Carlo standard error of ``drop`` (nan for one draw)


def _accuracy(model: nn.Module, batches) -> float:
    correct, n = 0, 0
    for x, y in batches:
        correct += int((model(x).argmax(dim=1) == y).sum())
        n += len(y)
    return correct / n


def weight_noise_robustness(model: nn.Module, data: Any, variances: Sequence[float], *, draws: int = 5,
                            generator: torch.Generator | None = None,
                            batch_size: int | None = 1024) -> tuple[float, list[NoiseDrop]]:
    """Accuracy of ``model`` on ``data`` and, for each v² in ``variances``, the relative drop under weight noise.

    Perturbs the trainable parameters (``weight_orig`` of pruned layers, times their mask) and restores them
    exactly. Noise is drawn from ``generator`` (on its own device, then moved), else from the global RNG.
    """
    if draws < 1:
        raise ValueError("draws must be >= 1")
    if any(not (v >= 0 and math.isfinite(v)) for v in variances):
        raise ValueError(f"variances must be finite and >= 0, got {list(variances)}")
    device = model_device(model)
    batches = as_batches(data, batch_size=batch_size, device=device)
    space = parameters_to_perturb(model)
    gen_device = generator.device if generator is not None else device
    saved = [p.detach().clone() for p in space.params]
    out: list[NoiseDrop] = []
    try:
        with eval_mode(model), torch.no_grad():
            clean = _accuracy(model, batches)
            for var in variances:
                v = math.sqrt(var)
                accs = np.empty(draws, dtype=np.float64)
                for k in range(draws):
                    for p, p0, m in zip(space.params, saved, space.masks):
                        z = torch.randn(p.shape, generator=generator, device=gen_device, dtype=p.dtype)
                        p.copy_(p0 + v * z.to(p.device) * m)
                    accs[k] = _accuracy(model, batches)
                drops = (clean - accs) / clean if clean > 0 else np.full(draws, math.nan)
                se = float(drops.std(ddof=1) / math.sqrt(draws)) if draws > 1 else math.nan
                out.append(NoiseDrop(float(var), float(accs.mean()), float(drops.mean()), se))
    finally:
        with torch.no_grad():
            for p, p0 in zip(space.params, saved):
                p.copy_(p0)
    return clean, out
