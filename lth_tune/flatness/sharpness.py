"""Expected sharpness restricted to the unpruned weights (paper 000 §4.2, spike-and-slab posterior).

    E_ε[L_S(θ̄ + ε)] − L_S(θ̄),   ε_i ~ N(0, σ_i²) for unpruned weights, ε_i = 0 for pruned ones.

Monte-Carlo with antithetic pairs (±ε; the distribution is symmetric, so the estimator stays unbiased and
the first-order term cancels exactly), reported with its standard error.  For a quadratic loss the value
is exactly ½ Σ_i σ_i² H_ii (= ½ σ² tr(H) over unpruned weights for a scalar σ).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lth_tune.models import eval_mode, model_device

from ._util import as_batches, dataset_loss, parameters_to_perturb

__all__ = ["SharpnessResult", "expected_sharpness"]


@dataclass
class SharpnessResult:
    value: float          # E[L(θ+ε)] − L(θ)
    se: float             # Monte-Carlo standard error of ``value``
    base_loss: float      # L(θ)
    perturbed_loss: float  # estimate of E[L(θ+ε)]
    n_samples: int        # noise draws (each evaluated at +ε and, if antithetic, −ε)
    n_evals: int          # loss evaluations over the data (excluding the base loss)


def expected_sharpness(model: nn.Module, criterion, data: Any, sigma: float | Sequence[Tensor],
                       n_samples: int = 32, generator: torch.Generator | None = None, *,
                       antithetic: bool = True, batch_size: int | None = None,
                       n_batches: int | None = None) -> SharpnessResult:
    """Expected sharpness with Gaussian noise on the unpruned weights only; parameters restored exactly.

    ``sigma``: a scalar, or per-parameter standard deviations shaped like
    ``parameters_to_perturb(model).params`` (the posterior σ_q).  Noise is drawn from ``generator`` (on
    its own device, then moved), else from the global RNG.  Loss in eval mode over all of ``data``.
    With ``antithetic`` each draw contributes ``(L(θ+ε) + L(θ−ε))/2 − L(θ)``; the standard error is over
    draws.
    """
    if n_samples < 1:
        raise ValueError("n_samples must be >= 1")
    device = model_device(model)
    batches = as_batches(data, batch_size=batch_size, n_batches=n_batches, device=device)
    space = parameters_to_perturb(model)
    if isinstance(sigma, (int, float)):
        sigmas = [None] * len(space.params)
        scalar = float(sigma)
    else:
        if len(sigma) != len(space.params):
            raise ValueError("sigma must have one tensor per perturbable parameter")
        sigmas = [torch.as_tensor(s).detach().to(device=p.device, dtype=p.dtype).expand_as(p)
                  for s, p in zip(sigma, space.params)]
        scalar = 1.0
    gen_device = generator.device if generator is not None else device
    saved = [p.detach().clone() for p in space.params]
    values = np.empty(n_samples, dtype=np.float64)
    perturbed = np.empty(n_samples, dtype=np.float64)
    n_evals = 0
    try:
        with eval_mode(model), torch.no_grad():
            base = dataset_loss(model, criterion, batches)
            for k in range(n_samples):
                eps = []
                for p, m, s in zip(space.params, space.masks, sigmas):
                    e = torch.randn(p.shape, generator=generator, device=gen_device, dtype=p.dtype)
                    e = e.to(p.device) * m * (scalar if s is None else s)
                    eps.append(e)
                signs = (1.0, -1.0) if antithetic else (1.0,)
                acc = 0.0
                for sign in signs:
                    for p, p0, e in zip(space.params, saved, eps):
                        p.copy_(p0 + sign * e)
                    acc += dataset_loss(model, criterion, batches)
                    n_evals += 1
                perturbed[k] = acc / len(signs)
                values[k] = perturbed[k] - base
    finally:
        with torch.no_grad():
            for p, p0 in zip(space.params, saved):
                p.copy_(p0)
    se = float(values.std(ddof=1) / math.sqrt(n_samples)) if n_samples > 1 else float("nan")
    return SharpnessResult(value=float(values.mean()), se=se, base_loss=base,
                           perturbed_loss=float(perturbed.mean()), n_samples=n_samples, n_evals=n_evals)
