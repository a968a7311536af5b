"""PAC-Bayes risk bounds with a data-dependent prior (paper 004 §5.1 Theorem 1, App. A.2 Theorem 2).

Both bounds use the complexity term

    ε = (KL(Q‖P) + log(2√n/δ)) / n,

where **n is the size of the bound split only**: with a prior trained on S_P ⊂ S and
α = |S_P|/|S|, the caller passes ``n = (1−α)|S| = |S \\ S_P|`` (paper 004 Theorem 1), and the
empirical risk must be measured on that same split S \\ S_P.  Paper 004 writes the Theorem 2 term as
``log(2√N/δ)`` with N the number of examples the bound is evaluated on (again |S \\ S_P|).

Functions accept floats (returning floats) or torch tensors for ``emp_risk`` / ``kl`` (returning
differentiable tensors, for bound optimisation); ``n`` and ``delta`` are plain numbers.
The returned values are not clipped to 1 (a value ≥ 1 is a vacuous bound).
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import numpy as np
import torch

from .kl import kl_inverse_upper

__all__ = ["bound_epsilon", "kl_bound", "theorem1_bound", "validate_n_delta"]


def validate_n_delta(n: Any, delta: Any) -> None:
    """Raise ``ValueError`` unless ``n`` is a positive integer count and ``δ ∈ (0, 1)``."""
    if isinstance(n, bool) or not isinstance(n, (Real, np.integer, np.floating)):
        raise ValueError(f"n (size of the bound split) must be a positive integer, got {n!r}")  # noqa: TRY004
    if not (math.isfinite(float(n)) and float(n) > 0 and float(n).is_integer()):
        raise ValueError(
            f"n (size of the bound split S \\ S_P) must be a positive integer, got {n!r}; "
            "pass round((1 - alpha) * len(S)) / the actual number of bound examples"
        )
    if not isinstance(delta, (Real, np.floating)) or not (0.0 < float(delta) < 1.0):
        raise ValueError(f"delta must lie in the open interval (0, 1), got {delta!r}")


def _validate_values(emp_risk: Any, kl: Any) -> None:
    """Value checks for float/array inputs (skipped for tensors to avoid device syncs)."""
    if not isinstance(emp_risk, torch.Tensor):
        r = np.asarray(emp_risk, dtype=np.float64)
        if np.any(np.isnan(r)) or np.any((r < 0) | (r > 1)):
            raise ValueError(f"empirical risk must lie in [0, 1], got {emp_risk!r}")
    if not isinstance(kl, torch.Tensor):
        k = np.asarray(kl, dtype=np.float64)
        if np.any(np.isnan(k)) or np.any(k < 0):
            raise ValueError(f"KL divergence must be >= 0 (and not NaN), got {kl!r}")


def bound_epsilon(kl: Any, n: Any, delta: float) -> Any:
    """Complexity term ``ε = (KL + log(2√n/δ)) / n`` of paper 004 Theorem 1 (eq. (4)) and
    Theorem 2 (eq. (7)); ``n`` = size of the bound split ``(1−α)|S|``."""
    validate_n_delta(n, delta)
    _validate_values(0.0, kl)
    n = float(n)
    log_term = math.log(2.0 * math.sqrt(n) / float(delta))
    if isinstance(kl, torch.Tensor):
        return (kl + log_term) / n
    out = (np.asarray(kl, dtype=np.float64) + log_term) / n
    return float(out) if np.ndim(out) == 0 else out


def theorem1_bound(emp_risk: Any, kl: Any, n: Any, delta: float) -> Any:
    """Paper 004 Theorem 1 (eq. (4)), from Dziugaite et al. [3, Thm. D.2] and Catoni/McAllester:

        R_D(Q) ≤ R̂ + min( ε + √(ε(ε + 2R̂)),  √(ε/2) ),   ε = (KL + log(2√n/δ)) / n,

    with probability ≥ 1−δ, where R̂ is the empirical Gibbs risk on the bound split
    S \\ S_P of size ``n = (1−α)|S|`` (pass that size only, not |S|).  The first branch (fast rate)
    wins for small R̂ and ε, the second (Pinsker/McAllester) otherwise.

    Float/array inputs → float/array; tensor ``emp_risk``/``kl`` → differentiable tensor (the
    gradient flows through whichever branch attains the min).
    """
    _validate_values(emp_risk, kl)
    eps = bound_epsilon(kl, n, delta)
    if isinstance(emp_risk, torch.Tensor) or isinstance(eps, torch.Tensor):
        ref = emp_risk if isinstance(emp_risk, torch.Tensor) else eps
        r = torch.as_tensor(emp_risk, dtype=ref.dtype, device=ref.device)
        e = torch.as_tensor(eps, dtype=ref.dtype, device=ref.device)
        fast = e + torch.sqrt(e * (e + 2.0 * r))
        slow = torch.sqrt(e / 2.0)
        return r + torch.minimum(fast, slow)
    r = np.asarray(emp_risk, dtype=np.float64)
    e = np.asarray(eps, dtype=np.float64)
    out = r + np.minimum(e + np.sqrt(e * (e + 2.0 * r)), np.sqrt(e / 2.0))
    return float(out) if np.ndim(out) == 0 else out


def kl_bound(emp_risk: Any, kl: Any, n: Any, delta: float) -> Any:
    """Langford–Seeger / Maurer bound, paper 004 App. A.2 Theorem 2 (eq. (7)):

        R_D(Q) ≤ kl⁻¹( R̂ ‖ (KL + log(2√n/δ)) / n ),   kl⁻¹(a‖ε) = sup{p : kl(a‖p) ≤ ε},

    with probability ≥ 1−δ; ``n`` is the size of the split R̂ is measured on (``(1−α)|S|`` with a
    data-dependent prior).  Always at least as tight as :func:`theorem1_bound` (Theorem 1 is a
    relaxation of it).  Tensor inputs give a differentiable result (implicit-function gradient
    of :func:`~lth_tune.pacbayes.kl.kl_inverse_upper`).
    """
    _validate_values(emp_risk, kl)
    eps = bound_epsilon(kl, n, delta)
    return kl_inverse_upper(emp_risk, eps)
