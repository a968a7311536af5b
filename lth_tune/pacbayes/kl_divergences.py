"""KL divergences between weight distributions: Gaussian and spike-and-slab (torch, differentiable).

Notation (paper 004, eq. (5) and Appendix B.4; paper 000, eqs. (2)–(5)): for weight i the prior is
``p_i = (1−λ_{p,i}) δ_0 + λ_{p,i} N(μ_{p,i}, σ_{p,i}²)`` and the posterior is
``q_i = (1−λ_{q,i}) δ_0 + λ_{q,i} N(μ_{q,i}, σ_{q,i}²)``.  **All σ are standard deviations**
(paper 000 writes "variance" but uses σ as a standard deviation in eq. (3)).

Because the spike δ_0 and the Gaussian slab are mutually singular, the KL of the mixtures
decomposes exactly (no approximation):

    KL(q_i‖p_i) = kl(λ_{q,i}‖λ_{p,i}) + λ_{q,i} γ_i,
    γ_i = KL(N(μ_q, σ_q²)‖N(μ_p, σ_p²)) = ½(σ_q²/σ_p² + (μ_q−μ_p)²/σ_p² − log(σ_q²/σ_p²) − 1),

which is paper 004 App. B.4 (the main-text formula after eq. (5) has a typo) and paper 000 eq. (3).

Every function takes tensors (or floats, promoted to float64 tensors), broadcasts its arguments,
and returns a differentiable scalar (``reduction="sum"``) or the per-weight terms
(``reduction="none"``).  The model-level functions (``spike_and_slab_kl_from_mask``,
``gaussian_kl_zero_mean_prior``, and also ``gaussian_kl``/``spike_and_slab_kl``) additionally accept
``Mapping[str, Tensor]`` arguments keyed by layer name (e.g. ``lth_tune.pruning.masks(model)``);
all mappings must have the same keys, non-mapping arguments are shared by every layer, and
``reduction="none"`` then returns a dict of per-weight tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from .kl import kl_bernoulli

__all__ = [
    "gaussian_kl",
    "gaussian_kl_zero_mean_prior",
    "spike_and_slab_kl",
    "spike_and_slab_kl_from_mask",
]


def _ref(*xs: Any) -> tuple[torch.dtype, torch.device]:
    for x in xs:
        if isinstance(x, torch.Tensor) and x.dtype.is_floating_point:
            return x.dtype, x.device
    for x in xs:
        if isinstance(x, torch.Tensor):
            return torch.float64, x.device
    return torch.float64, torch.device("cpu")


def _tensors(*xs: Any) -> list[torch.Tensor]:
    dtype, device = _ref(*xs)
    return list(torch.broadcast_tensors(*[torch.as_tensor(x, dtype=dtype, device=device) for x in xs]))


def _as_float(mask: Any) -> Any:
    """Masks may be bool/int tensors; make them floating so they join ``_tensors`` (no gradient)."""
    if isinstance(mask, torch.Tensor):
        return mask.detach().to(torch.float64 if not mask.dtype.is_floating_point else mask.dtype)
    return mask


def _check_reduction(reduction: str) -> None:
    if reduction not in ("sum", "none"):
        raise ValueError(f"reduction must be 'sum' or 'none', got {reduction!r}")


def _per_layer(fn: Callable[..., torch.Tensor], reduction: str, **kwargs: Any) -> Any:
    """Apply an elementwise ``fn`` to tensors or to same-keyed mappings of tensors, then reduce."""
    _check_reduction(reduction)
    maps = {k: v for k, v in kwargs.items() if isinstance(v, Mapping)}
    if not maps:
        out = fn(**kwargs)
        return out.sum() if reduction == "sum" else out
    keys = list(next(iter(maps.values())).keys())
    for name, m in maps.items():
        if set(m.keys()) != set(keys):
            raise ValueError(f"argument {name!r} has layer keys {sorted(m.keys())}, expected {sorted(keys)}")
    per = {
        key: fn(**{k: (v[key] if isinstance(v, Mapping) else v) for k, v in kwargs.items()}) for key in keys
    }
    if reduction == "none":
        return per
    return torch.stack([t.sum() for t in per.values()]).sum()


def _gaussian_terms(mean_q: Any, sigma_q: Any, mean_p: Any, sigma_p: Any) -> torch.Tensor:
    mq, sq, mp, sp = _tensors(mean_q, sigma_q, mean_p, sigma_p)
    # log r with r = σ_q²/σ_p²; r − 1 − log r = expm1(log r) − log r stays accurate for r ≈ 1.
    log_r = 2.0 * (torch.log(sq) - torch.log(sp))
    return 0.5 * (torch.expm1(log_r) - log_r + ((mq - mp) / sp) ** 2)


def gaussian_kl(mean_q: Any, sigma_q: Any, mean_p: Any, sigma_p: Any, *, reduction: str = "sum") -> Any:
    """Diagonal-Gaussian KL ``Σ_i KL(N(μ_q, σ_q²)‖N(μ_p, σ_p²))`` (paper 004 App. B.4, γ_i).

    ``γ_i = ½(σ_q²/σ_p² + (μ_q−μ_p)²/σ_p² − log(σ_q²/σ_p²) − 1)`` with σ standard deviations; this is
    the Gaussian baseline of paper 000 §4.3 and the slab term of eq. (3).  Differentiable in all
    arguments.  ``σ_q = 0`` gives ``+∞``.
    """
    return _per_layer(
        _gaussian_terms, reduction, mean_q=mean_q, sigma_q=sigma_q, mean_p=mean_p, sigma_p=sigma_p
    )


def _spike_and_slab_terms(
    lambda_q: Any, lambda_p: Any, mean_q: Any, mean_p: Any, sigma_q: Any, sigma_p: Any
) -> torch.Tensor:
    lq, lp, mq, mp, sq, sp = _tensors(lambda_q, lambda_p, mean_q, mean_p, sigma_q, sigma_p)
    off = lq == 0
    one = torch.ones_like(sq)
    # Where λ_q = 0 the slab does not exist: 0·γ_i = 0 even if γ_i is ∞/NaN (e.g. σ_q = 0 for
    # pruned weights).  Safe inputs there keep the gradient finite (double-where).
    gamma = _gaussian_terms(
        torch.where(off, torch.zeros_like(mq), mq),
        torch.where(off, one, sq),
        torch.where(off, torch.zeros_like(mp), mp),
        torch.where(off, one, sp),
    )
    slab = torch.where(off, torch.zeros_like(gamma), lq * gamma)
    return kl_bernoulli(lq, lp) + slab


def spike_and_slab_kl(
    lambda_q: Any,
    lambda_p: Any,
    mean_q: Any,
    mean_p: Any,
    sigma_q: Any,
    sigma_p: Any,
    *,
    reduction: str = "sum",
) -> Any:
    """Spike-and-slab KL ``Σ_i kl(λ_{q,i}‖λ_{p,i}) + λ_{q,i} γ_i`` (paper 004 App. B.4; paper 000
    eqs. (3)–(4)).

    ``λ`` are slab (keep) probabilities, i.e. ``λ = 1`` means "unpruned for sure"; σ are standard
    deviations; all arguments broadcast.  Exact (the spike and slab are mutually singular).
    Differentiable in λ_q, means and σ (∂/∂λ_q is ±∞ at λ_q ∈ {0, 1}, as it truly is); where
    ``λ_q = 0`` the slab parameters are ignored.  ``+∞`` if ``λ_p ∈ {0, 1}`` disagrees with λ_q.
    """
    return _per_layer(
        _spike_and_slab_terms,
        reduction,
        lambda_q=lambda_q,
        lambda_p=lambda_p,
        mean_q=mean_q,
        mean_p=mean_p,
        sigma_q=sigma_q,
        sigma_p=sigma_p,
    )


def _check_density(density_p: Any) -> None:
    if isinstance(density_p, torch.Tensor):
        bad = bool(((density_p < 0) | (density_p > 1) | torch.isnan(density_p)).any())
    else:
        d = float(density_p)
        bad = not (0.0 <= d <= 1.0)
    if bad:
        raise ValueError(f"density_p (prior slab probability λ_p) must lie in [0, 1], got {density_p!r}")


def _from_mask_terms(
    mask: Any, theta: Any, theta_init: Any, sigma_q: Any, sigma_p: Any, density_p: Any
) -> torch.Tensor:
    th, th0, sq, sp, lp, mf = _tensors(theta, theta_init, sigma_q, sigma_p, density_p, _as_float(mask))
    m = mf != 0
    one = torch.ones_like(sq)
    gamma = _gaussian_terms(
        torch.where(m, th, torch.zeros_like(th)),
        torch.where(m, sq, one),
        torch.where(m, th0, torch.zeros_like(th0)),
        torch.where(m, sp, one),
    )
    # eq. (5): kl(1‖λ_p) = −log λ_p (unpruned), kl(0‖λ_p) = −log(1−λ_p) (pruned).
    unpruned = gamma - torch.log(torch.where(m, lp, one))
    pruned = -torch.log1p(-torch.where(m, torch.zeros_like(lp), lp))
    return torch.where(m, unpruned, pruned)


def spike_and_slab_kl_from_mask(
    mask: Any,
    theta: Any,
    theta_init: Any,
    sigma_q: Any,
    sigma_p: Any,
    density_p: Any,
    *,
    reduction: str = "sum",
) -> Any:
    """Spike-and-slab KL for a fixed pruning mask (paper 000 eqs. (2)–(5), λ_q → m ∈ {0, 1}).

    Prior slab ``N(θ_init, σ_p²)`` with keep probability ``λ_p = density_p`` (the *target density*,
    e.g. 0.1 for 90 % sparsity); posterior ``N(θ, σ_q²)`` on unpruned weights and δ_0 on pruned ones:

        KL = Σ_{m_i=1} [γ_i(θ_i, σ_{q,i}; θ_init,i, σ_{p,i}) − log λ_p] + Σ_{m_i=0} [−log(1−λ_p)].

    Equals :func:`spike_and_slab_kl` with ``λ_q = mask``.  ``sigma_q``/``sigma_p``/``density_p``
    may be scalars or per-weight tensors (σ standard deviations); values at pruned weights are
    ignored.  Differentiable in θ, θ_init, σ_q, σ_p and density_p.  Arguments may be tensors or
    same-keyed ``{layer_name: tensor}`` mappings (see module docstring).
    """
    if isinstance(density_p, Mapping):
        for v in density_p.values():
            _check_density(v)
    else:
        _check_density(density_p)
    return _per_layer(
        _from_mask_terms,
        reduction,
        mask=mask,
        theta=theta,
        theta_init=theta_init,
        sigma_q=sigma_q,
        sigma_p=sigma_p,
        density_p=density_p,
    )


def _zero_mean_terms(theta: Any, sigma_q: Any, sigma_p: Any, mask: Any) -> torch.Tensor:
    if mask is None:
        th, sq, sp = _tensors(theta, sigma_q, sigma_p)
    else:
        th, sq, sp, mf = _tensors(theta, sigma_q, sigma_p, _as_float(mask))
        th = torch.where(mf != 0, th, torch.zeros_like(th))
    return _gaussian_terms(th, sq, torch.zeros_like(th), sp)


def gaussian_kl_zero_mean_prior(
    theta: Any, sigma_q: Any, sigma_p: Any, mask: Any = None, *, reduction: str = "sum"
) -> Any:
    """Gaussian baseline with a zero-mean prior, "Measure 2" of paper 000 (§4.1, Fig. 4 right).

    Posterior ``N(m ⊙ θ, σ_q²)`` over **all** weights (pruned weights have mean 0 but still carry
    noise σ_q), prior ``N(0, σ_p²)``:  ``KL = Σ_i γ_i(m_i θ_i, σ_{q,i}; 0, σ_{p,i})``.
    ``mask=None`` means θ is already the effective (masked) weight vector.
    """
    return _per_layer(_zero_mean_terms, reduction, theta=theta, sigma_q=sigma_q, sigma_p=sigma_p, mask=mask)
