"""Bernoulli KL divergence and its inverses (paper 004, Appendix A.2).

``kl(q‖p) = q log(q/p) + (1−q) log((1−q)/(1−p))`` is the KL divergence of the Bernoulli
distribution B(q) to B(p).  Its upper inverse ``kl⁻¹(q‖c) = sup{p ∈ [q, 1] : kl(q‖p) ≤ c}`` is the
quantity in the Langford–Seeger bound (paper 004, Theorem 2, eq. (7)) and in the Monte-Carlo
"sample convergence" step of Dziugaite & Roy (2017) (paper 004, Appendix A.3).

Every function accepts Python floats, numpy arrays or torch tensors and returns the same kind
(float → float, array → float64 array, tensor → tensor).  All arithmetic is float64 except for the
torch path, which keeps the tensor dtype (use float64 tensors for bound evaluation).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["kl_bernoulli", "kl_inverse_lower", "kl_inverse_upper"]


# ----------------------------------------------------------------------------------------------
# kl(q‖p)
# ----------------------------------------------------------------------------------------------
def _kl_impl(q: Any, p: Any, xp: Any, xlogy: Any) -> Any:
    """Shared numpy/torch implementation (``xp`` = numpy or torch, arrays already broadcast).

    Each log-ratio is evaluated as ``log1p(relative difference)`` when its argument is near 1 and
    as ``log(ratio)`` otherwise, so the result only suffers the unavoidable cancellation of order
    eps·|q − p| (not eps·|q log q|).  Boundary cases (q or p ∈ {0, 1}) go through ``xlogy`` with
    its conventions 0·log 0 = 0, a·log 0 = −∞.  All masked-out branches see "safe" inputs (the
    double-where pattern), so torch gradients never pick up NaNs from unused branches.
    """
    one, zero = xp.ones_like(q), xp.zeros_like(q)
    # head = q log(q/p)
    vh = (q > 0) & (p > 0)
    qh, ph = xp.where(vh, q, one), xp.where(vh, p, one)
    d = qh - ph
    near = xp.abs(d) < 0.5 * ph  # then q − p is exact (Sterbenz)
    rel = xp.where(near, d, zero) / xp.where(near, ph, one)
    ratio = qh / ph
    ratio_ok = xp.isfinite(ratio) & (ratio > 0)
    far = xp.where(ratio_ok, xp.log(xp.where(ratio_ok, ratio, one)), xp.log(qh) - xp.log(ph))
    head = xp.where(vh, q * xp.where(near, xp.log1p(rel), far), xlogy(q, q) - xlogy(q, p))
    # tail = (1 − q) log((1 − q)/(1 − p))
    vt = (q < 1) & (p < 1)
    qt, pt = xp.where(vt, q, zero), xp.where(vt, p, zero)
    a, b = 1 - qt, 1 - pt  # both > 0; b is exact for p ≥ 1/2
    dt = pt - qt
    near_t = xp.abs(dt) < 0.5 * b
    rel_t = xp.where(near_t, dt, zero) / xp.where(near_t, b, one)
    tail_log = xp.where(near_t, xp.log1p(rel_t), xp.log(a / b))
    tail = xp.where(vt, (1 - q) * tail_log, xlogy(1 - q, 1 - q) - xlogy(1 - q, 1 - p))
    return head + tail


def _kl_numpy(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    from scipy import special  # here, not at import: ≈0.2 s off every trial process's and the sweep driver's start

    q, p = np.broadcast_arrays(np.asarray(q, dtype=np.float64), np.asarray(p, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        return _kl_impl(q, p, np, special.xlogy)


def _kl_torch(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    q, p = torch.broadcast_tensors(q, p)
    return _kl_impl(q, p, torch, torch.xlogy)


def kl_bernoulli(q: Any, p: Any) -> Any:
    """Bernoulli KL divergence ``kl(q‖p)`` (paper 004, App. A.2; paper 000, eq. (4)).

    ``kl(q‖p) = q log(q/p) + (1−q) log((1−q)/(1−p))`` with the conventions ``0 log 0 = 0`` and
    ``a log(a/0) = +∞`` for ``a > 0``.  Exact at ``q ∈ {0, 1}`` (no clamping): ``kl(0‖p) =
    −log(1−p)``, ``kl(1‖p) = −log p``; ``+∞`` when ``p ∈ {0, 1}`` and ``q ≠ p``.  Log-ratios near 1
    use ``log1p`` of the relative difference, so tiny probabilities keep full relative precision
    and the error near ``p ≈ q`` is only the unavoidable O(eps·|q−p|) (see ``_kl_impl``).

    Inputs broadcast.  Torch inputs give a differentiable torch result (gradients are ±∞ where the
    true derivative is, e.g. ∂/∂q at q = 0).  Values outside [0, 1] give NaN.
    """
    if isinstance(q, torch.Tensor) or isinstance(p, torch.Tensor):
        ref = q if isinstance(q, torch.Tensor) else p
        dtype = ref.dtype if ref.dtype.is_floating_point else torch.float64
        q_t = torch.as_tensor(q, dtype=dtype, device=ref.device)
        p_t = torch.as_tensor(p, dtype=dtype, device=ref.device)
        return _kl_torch(q_t, p_t)
    scalar = np.isscalar(q) and np.isscalar(p)
    out = _kl_numpy(np.asarray(q, dtype=np.float64), np.asarray(p, dtype=np.float64))
    return float(out) if scalar else out


# ----------------------------------------------------------------------------------------------
# kl⁻¹ by bisection on the bit pattern of non-negative doubles
# ----------------------------------------------------------------------------------------------
# For non-negative IEEE-754 doubles, the int64 bit pattern is strictly increasing in the value, so
# bisecting over the integers brackets the root between two *adjacent* doubles in at most 63
# steps, whatever the magnitude of the root (this behaves like bisection in log-space near 0 and
# like ordinary bisection near 1).  No tolerance to tune, no clamping, exact at the boundaries.
_BISECT_STEPS = 64


def _as_bits(x: np.ndarray) -> np.ndarray:
    return np.array(x, dtype=np.float64, order="C").view(np.int64)


def _from_bits(b: np.ndarray) -> np.ndarray:
    return np.array(b, dtype=np.int64, order="C").view(np.float64)


def _validate_qc(q: np.ndarray, c: np.ndarray) -> None:
    if np.any(np.isnan(q)) or np.any((q < 0) | (q > 1)):
        raise ValueError("kl inverse: q must lie in [0, 1] (got values outside or NaN)")
    if np.any(np.isnan(c)) or np.any(c < 0):
        raise ValueError("kl inverse: c must be >= 0 (got negative or NaN values)")


def _kl_inverse_numpy(q: np.ndarray, c: np.ndarray, upper: bool) -> np.ndarray:
    q, c = np.broadcast_arrays(np.asarray(q, dtype=np.float64), np.asarray(c, dtype=np.float64))
    _validate_qc(q, c)
    q = q + 0.0  # drop -0.0 (its bit pattern is negative) and make a writable copy
    c = np.array(c, dtype=np.float64)
    end = np.ones_like(q) if upper else np.zeros_like(q)
    # If even the end point satisfies kl(q‖end) ≤ c it is the answer: q = 1 (upper) / q = 0
    # (lower) or c = +∞; otherwise kl(q‖end) = +∞.
    saturated = _kl_numpy(q, end) <= c
    if upper:
        # Invariant: kl(q‖lo) ≤ c < kl(q‖hi) (hi = 1 counts as "> c" even when unsaturated).
        lo, hi = _as_bits(q), _as_bits(end)
    else:
        # Invariant: kl(q‖lo) > c ≥ kl(q‖hi).
        lo, hi = _as_bits(end), _as_bits(q)
    active = ~saturated
    for _ in range(_BISECT_STEPS):
        mid = lo + (hi - lo) // 2
        ok = _kl_numpy(q, _from_bits(mid)) <= c  # kl(q‖mid) ≤ c
        if upper:
            lo = np.where(active & ok, mid, lo)
            hi = np.where(active & ~ok, mid, hi)
        else:
            hi = np.where(active & ok, mid, hi)
            lo = np.where(active & ~ok, mid, lo)
        if not np.any(active & (hi - lo > 1)):
            break
    # Outward rounding: the upper inverse returns the smallest double with kl(q‖p) > c (≥ the exact
    # sup), the lower one the largest double with kl(q‖p) > c (≤ the exact inf).  A root that
    # lies beyond the last double before the end point (e.g. q = 0.5, c = 1e3) thus gives 1 / 0.
    root = _from_bits(hi if upper else lo)
    out = np.where(saturated, end, root)
    return np.where(c == 0, q, out)  # kl(q‖p) = 0 iff p = q


class _KLInverse(torch.autograd.Function):
    """Differentiable kl⁻¹ via the implicit-function theorem on F(q, p) = kl(q‖p) − c = 0.

    ∂p/∂c = 1/∂ₚkl = p(1−p)/(p−q) and ∂p/∂q = −∂_q kl/∂ₚkl with ∂_q kl = log(q(1−p)/(p(1−q))).
    Where the inverse saturates at its end point (p = 1 upper, p = 0 lower) the gradient is 0.
    At c = 0 (p = q) ∂p/∂q = 1 and ∂p/∂c = ±∞ (the true square-root behaviour).
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, c: torch.Tensor, upper: bool) -> torch.Tensor:  # type: ignore[override]
        q_np = q.detach().to("cpu", torch.float64).numpy()
        c_np = c.detach().to("cpu", torch.float64).numpy()
        p_np = _kl_inverse_numpy(q_np, c_np, upper)
        p = torch.as_tensor(p_np, dtype=q.dtype, device=q.device)
        ctx.upper = upper
        ctx.save_for_backward(q, c, p)
        return p

    @staticmethod
    def backward(ctx, grad_p: torch.Tensor):  # type: ignore[override]
        q, _c, p = ctx.saved_tensors
        end = 1.0 if ctx.upper else 0.0
        saturated = p == end
        at_q = (p == q) & ~saturated
        free = ~(saturated | at_q)
        one = torch.ones_like(p)
        # Safe values for the masked-out entries, so that no NaN leaks through torch.where.
        ps = torch.where(free, p, 0.5 * one)
        qs = torch.where(free, q, 0.25 * one)
        dkl_dp = (ps - qs) / (ps * (1 - ps))
        dkl_dq = torch.log(qs) - torch.log(ps) + torch.log1p(-ps) - torch.log1p(-qs)
        dp_dc = torch.where(free, 1.0 / dkl_dp, torch.zeros_like(p))
        dp_dq = torch.where(free, -dkl_dq / dkl_dp, torch.zeros_like(p))
        sign = 1.0 if ctx.upper else -1.0
        dp_dc = torch.where(at_q, sign * math.inf * one, dp_dc)
        dp_dq = torch.where(at_q, one, dp_dq)
        grad_q = grad_p * dp_dq if ctx.needs_input_grad[0] else None
        grad_c = grad_p * dp_dc if ctx.needs_input_grad[1] else None
        return grad_q, grad_c, None


def _kl_inverse(q: Any, c: Any, upper: bool) -> Any:
    if isinstance(q, torch.Tensor) or isinstance(c, torch.Tensor):
        ref = q if isinstance(q, torch.Tensor) else c
        dtype = ref.dtype if ref.dtype.is_floating_point else torch.float64
        q_t = torch.as_tensor(q, dtype=dtype, device=ref.device)
        c_t = torch.as_tensor(c, dtype=dtype, device=ref.device)
        q_t, c_t = torch.broadcast_tensors(q_t, c_t)
        return _KLInverse.apply(q_t, c_t, upper)
    scalar = np.isscalar(q) and np.isscalar(c)
    out = _kl_inverse_numpy(np.asarray(q, dtype=np.float64), np.asarray(c, dtype=np.float64), upper)
    return float(out) if scalar else out


def kl_inverse_upper(q: Any, c: Any) -> Any:
    """Upper Bernoulli-KL inverse ``kl⁻¹(q‖c) = sup{p ∈ [q, 1] : kl(q‖p) ≤ c}`` (paper 004, App.
    A.2, Theorem 2 eq. (7); Dziugaite & Roy 2017 sample-convergence bound).

    Rounded outward, i.e. conservatively for an upper confidence bound: returns the smallest double
    ``p`` with computed ``kl(q‖p) > c`` (so the double just below it satisfies ``kl ≤ c``), which is
    within one ulp above the true root; found by ≤ 64-step bisection on the float64 bit pattern.
    Exact special cases: ``c = 0 → q``; ``q = 1 → 1``; ``c = +∞ → 1``; roots closer to 1 than the
    last double below 1 (huge c) ``→ 1``; ``q = 0 → 1 − e^{−c}`` (to one ulp).  Vectorised over broadcast arrays.  Raises ``ValueError`` for
    ``q ∉ [0, 1]`` or ``c < 0``.

    Torch tensors get a differentiable result (implicit-function gradient, see ``_KLInverse``);
    the root itself is always computed in float64 on the CPU.
    """
    return _kl_inverse(q, c, upper=True)


def kl_inverse_lower(q: Any, c: Any) -> Any:
    """Lower Bernoulli-KL inverse ``inf{p ∈ [0, q] : kl(q‖p) ≤ c}`` (lower confidence limit
    counterpart of :func:`kl_inverse_upper`, paper 004 App. A.2).

    Rounded outward (downward): returns the largest double ``p ≤ q`` with computed
    ``kl(q‖p) > c``, within one ulp below the true root.  Exact special cases: ``c = 0 → q``;
    ``q = 0 → 0``; ``c = +∞ → 0``; roots below the smallest subnormal (huge c) ``→ 0``;
    ``q = 1 → e^{−c}`` (to one ulp).  Same input handling and
    (implicit) differentiability as :func:`kl_inverse_upper`.
    """
    return _kl_inverse(q, c, upper=False)
