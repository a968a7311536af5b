"""Reported PAC-Bayes certificates: Monte-Carlo sample convergence + PAC-Bayes bound + union bound.

The empirical Gibbs risk R̂_S(Q) is an expectation over weights and is estimated from m networks
w_1..w_m ~ Q by R̂_m = (1/m) Σ_j R̂_S(w_j) (each term in [0, 1]).  Following Dziugaite & Roy (2017)
(paper 004 App. A.3: "a confidence interval can be obtained using a Chernoff bound"), with
probability ≥ 1−δ′ over the sampled networks

    R̂_S(Q) ≤ R_up := kl⁻¹( R̂_m ‖ log(2/δ′) / m ),

and the PAC-Bayes bound (paper 004 Theorem 1 or Theorem 2) at level δ is evaluated at R_up.
By a union bound the certificate holds with probability ≥ 1 − δ − δ′.

Union bound over hyperparameters: if the reported posterior is the best of a declared grid of K
configurations (e.g. the σ and learning-rate grids of paper 004 App. D.2), every configuration is
certified at (δ/K, δ′/K), or at (π_k δ, π_k δ′) for declared weights with Σ_k π_k ≤ 1, so that the
reported certificate still holds with probability ≥ 1 − δ − δ′ simultaneously for all of them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np

from .kl import kl_inverse_upper
from .theorems import bound_epsilon, kl_bound, theorem1_bound, validate_n_delta

__all__ = ["FORMS", "Certificate", "certify", "recertify", "sample_convergence_bound"]

FORMS = ("theorem1", "kl")
_WEIGHT_SUM_TOL = 1e-12


@dataclass(frozen=True)
class Certificate:
    """Every ingredient of a reported bound, so that it can be recomputed (:func:`recertify`).

    form:             "theorem1" (paper 004 eq. (4)) or "kl" (Theorem 2, eq. (7)).
    emp_risk_mc:      R̂_m, mean 0–1 risk of the m sampled networks on the bound split.
    m:                number of sampled networks.
    risk_upper:       R_up = kl⁻¹(R̂_m ‖ log(2/δ′_eff)/m), the sample-convergence upper bound.
    kl:               KL(Q‖P).
    n:                size of the bound split S \\ S_P (= (1−α)|S|).
    delta, delta_prime: overall failure probabilities of the PAC-Bayes and Monte-Carlo steps.
    grid_size:        K, number of declared configurations in the union bound.
    prior_weight:     π_k if a weighted union bound was used (else None).
    grid_weights:     the declared weights (π_1..π_K), if given, validated Σ π ≤ 1.
    delta_eff, delta_prime_eff: levels actually used (δ/K, δ′/K or π_k δ, π_k δ′).
    epsilon:          (KL + log(2√n/δ_eff)) / n.
    bound:            the risk bound (not clipped; ≥ 1 means vacuous).
    confidence:       1 − δ − δ′.
    """

    form: str
    emp_risk_mc: float
    m: int
    risk_upper: float
    kl: float
    n: int
    delta: float
    delta_prime: float
    grid_size: int
    prior_weight: float | None
    grid_weights: tuple[float, ...] | None
    delta_eff: float
    delta_prime_eff: float
    epsilon: float
    bound: float
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (JSON/TensorBoard friendly; ``grid_weights`` as a list)."""
        d = dataclasses.asdict(self)
        if d["grid_weights"] is not None:
            d["grid_weights"] = list(d["grid_weights"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Certificate:
        """Inverse of :meth:`to_dict` (no recomputation; use :func:`recertify` to check)."""
        d = dict(d)
        if d.get("grid_weights") is not None:
            d["grid_weights"] = tuple(float(w) for w in d["grid_weights"])
        return cls(**d)


def _as_count(x: Any, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, (Real, np.integer, np.floating)):
        raise ValueError(f"{name} must be a positive integer, got {x!r}")  # noqa: TRY004
    xf = float(x)
    if not (math.isfinite(xf) and xf >= 1 and xf.is_integer()):
        raise ValueError(f"{name} must be a positive integer, got {x!r}")
    return int(xf)


def _as_prob(x: Any, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (Real, np.floating)):
        raise ValueError(f"{name} must be a number in (0, 1), got {x!r}")  # noqa: TRY004
    xf = float(x)
    if not (0.0 < xf < 1.0):
        raise ValueError(f"{name} must lie in the open interval (0, 1), got {x!r}")
    return xf


def sample_convergence_bound(emp_risk_mc: float, m: int, delta_prime: float) -> float:
    """Monte-Carlo upper confidence bound on the empirical Gibbs risk (Dziugaite & Roy 2017;
    paper 004 App. A.3): ``R_up = kl⁻¹(R̂_m ‖ log(2/δ′)/m)``, valid w.p. ≥ 1−δ′ over m i.i.d.
    networks from Q whose individual risks lie in [0, 1]."""
    m = _as_count(m, "m (number of sampled networks)")
    delta_prime = _as_prob(delta_prime, "delta_prime")
    r = float(emp_risk_mc)
    if not (0.0 <= r <= 1.0):
        raise ValueError(f"emp_risk_mc must lie in [0, 1], got {emp_risk_mc!r}")
    return float(kl_inverse_upper(r, math.log(2.0 / delta_prime) / m))


def certify(
    emp_risk_mc: float,
    m: int,
    kl: float,
    n: int,
    *,
    delta: float = 0.05,
    delta_prime: float = 0.01,
    form: str = "kl",
    grid_size: int = 1,
    prior_weight: float | None = None,
    grid_weights: Sequence[float] | None = None,
) -> Certificate:
    """Certify a stochastic predictor Q: sample convergence, then the PAC-Bayes bound at R_up.

    ``R_up = kl⁻¹(R̂_m ‖ log(2/δ′_eff)/m)`` (Dziugaite & Roy 2017), then
    ``bound = kl⁻¹(R_up ‖ ε)`` (form="kl", paper 004 Theorem 2) or Theorem 1 (form="theorem1"),
    ``ε = (KL + log(2√n/δ_eff))/n``, holding with probability ≥ ``1 − δ − δ′``.

    Union bound: ``δ_eff = δ/K, δ′_eff = δ′/K`` with ``K = grid_size`` (every configuration of the
    declared grid that was tried, whether or not it is reported), or, if ``prior_weight = π_k`` is
    given, ``δ_eff = π_k δ, δ′_eff = π_k δ′``.  Pass ``grid_weights`` (all π's of the declared grid)
    to have ``Σπ ≤ 1`` and ``π_k ∈ grid_weights`` validated; without it the caller vouches for
    ``Σπ ≤ 1`` (e.g. a countable scheme π_k = 6/(π²k²)).  ``n`` is the bound-split size (1−α)|S|.

    Raises ``ValueError`` for δ, δ′ ∉ (0, 1), δ + δ′ ≥ 1, K < 1, n or m not positive integers,
    R̂_m ∉ [0, 1], KL < 0 or NaN, an unknown form, or inconsistent weights.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    delta = _as_prob(delta, "delta")
    delta_prime = _as_prob(delta_prime, "delta_prime")
    if delta + delta_prime >= 1.0:
        raise ValueError(f"delta + delta_prime must be < 1, got {delta} + {delta_prime}")
    m = _as_count(m, "m (number of sampled networks)")
    validate_n_delta(n, delta)
    n = int(float(n))
    if (
        isinstance(grid_size, bool)
        or not isinstance(grid_size, (Real, np.integer))
        or grid_size < 1
        or not float(grid_size).is_integer()
    ):
        raise ValueError(f"grid_size K must be an integer >= 1, got {grid_size!r}")
    grid_size = int(grid_size)
    risk = float(emp_risk_mc)
    if not (0.0 <= risk <= 1.0):
        raise ValueError(f"emp_risk_mc (Monte-Carlo empirical risk) must lie in [0, 1], got {emp_risk_mc!r}")
    kl = float(kl)
    if math.isnan(kl) or kl < 0:
        raise ValueError(f"kl must be >= 0, got {kl!r}")

    weights: tuple[float, ...] | None = None
    if grid_weights is not None:
        weights = tuple(float(w) for w in grid_weights)
        if not weights or any(not (w >= 0.0) or math.isinf(w) for w in weights):
            raise ValueError(
                f"grid_weights must be a non-empty sequence of weights >= 0, got {grid_weights!r}"
            )
        if sum(weights) > 1.0 + _WEIGHT_SUM_TOL:
            raise ValueError(f"grid_weights must sum to <= 1 (union bound), got sum {sum(weights)!r}")
        if prior_weight is None:
            raise ValueError("grid_weights given without prior_weight (the weight π_k of this configuration)")
        if grid_size not in (1, len(weights)):
            raise ValueError(f"grid_size={grid_size} disagrees with len(grid_weights)={len(weights)}")
        grid_size = len(weights)
    if prior_weight is not None:
        w = float(prior_weight)
        if not (0.0 < w <= 1.0):
            raise ValueError(f"prior_weight π_k must lie in (0, 1], got {prior_weight!r}")
        if weights is not None and not any(math.isclose(w, x, rel_tol=1e-12, abs_tol=0.0) for x in weights):
            raise ValueError(f"prior_weight {w!r} is not one of the declared grid_weights")
        split = w
        prior_weight = w
    else:
        split = 1.0 / grid_size

    delta_eff = delta * split
    delta_prime_eff = delta_prime * split
    risk_upper = sample_convergence_bound(risk, m, delta_prime_eff)
    eps = float(bound_epsilon(kl, n, delta_eff))
    if form == "kl":
        bound = float(kl_bound(risk_upper, kl, n, delta_eff))
    else:
        bound = float(theorem1_bound(risk_upper, kl, n, delta_eff))
    return Certificate(
        form=form,
        emp_risk_mc=risk,
        m=m,
        risk_upper=risk_upper,
        kl=kl,
        n=n,
        delta=delta,
        delta_prime=delta_prime,
        grid_size=grid_size,
        prior_weight=prior_weight,
        grid_weights=weights,
        delta_eff=delta_eff,
        delta_prime_eff=delta_prime_eff,
        epsilon=eps,
        bound=bound,
        confidence=1.0 - delta - delta_prime,
    )


def recertify(
    cert: Certificate,
    *,
    delta: float | None = None,
    delta_prime: float | None = None,
    grid_size: int | None = None,
    m: int | None = None,
    form: str | None = None,
) -> Certificate:
    """Recompute a certificate from its reported ingredients (R̂_m, m, KL, n, δ, δ′, K, π),
    optionally overriding δ, δ′, K, m or the form (e.g. "what if the grid had been larger").
    Overriding ``grid_size`` on a weighted (π_k) certificate is rejected as ambiguous."""
    if grid_size is not None and cert.prior_weight is not None:
        raise ValueError("cannot override grid_size of a certificate that used prior_weight (π_k)")
    return certify(
        cert.emp_risk_mc,
        cert.m if m is None else m,
        cert.kl,
        cert.n,
        delta=cert.delta if delta is None else delta,
        delta_prime=cert.delta_prime if delta_prime is None else delta_prime,
        form=cert.form if form is None else form,
        grid_size=cert.grid_size if grid_size is None else grid_size,
        prior_weight=cert.prior_weight,
        grid_weights=cert.grid_weights,
    )
