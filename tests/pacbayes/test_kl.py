"""kl(q‖p) and its upper/lower inverses against naive formulas and an independent root finder."""

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq

from lth_tune.pacbayes.kl import kl_bernoulli, kl_inverse_lower, kl_inverse_upper

TINY = np.finfo(np.float64).tiny
BELOW_ONE = float(np.nextafter(1.0, 0.0))


def naive_kl(q: float, p: float) -> float:
    """Textbook formula, written independently of the package (math module, explicit branches)."""
    out = 0.0
    if q > 0:
        out += math.inf if p == 0 else q * math.log(q / p)
    if q < 1:
        out += math.inf if p == 1 else (1 - q) * math.log((1 - q) / (1 - p))
    return out


def precise_kl(q: float, p: float) -> float:
    """kl(q‖p) in 40-digit arithmetic (mpmath), rounded once: the reference root finder's f."""
    with mpmath.workdps(40):
        q_, p_ = mpmath.mpf(q), mpmath.mpf(p)
        out = mpmath.mpf(0)
        if q > 0:
            if p == 0:
                return math.inf
            out += q_ * mpmath.log(q_ / p_)
        if q < 1:
            if p == 1:
                return math.inf
            out += (1 - q_) * mpmath.log((1 - q_) / (1 - p_))
        return float(out)


def ref_upper(q: float, c: float) -> float:
    if c == 0 or q == 1:
        return q
    if precise_kl(q, BELOW_ONE) <= c:
        return 1.0
    return brentq(lambda p: precise_kl(q, p) - c, q, BELOW_ONE, xtol=5e-324, rtol=8.9e-16, maxiter=1000)


def ref_lower(q: float, c: float) -> float:
    if c == 0 or q == 0:
        return q
    if precise_kl(q, TINY) <= c:
        return 0.0
    return brentq(lambda p: precise_kl(q, p) - c, TINY, q, xtol=5e-324, rtol=8.9e-16, maxiter=1000)


# ---------------------------------------------------------------------------------------------
# kl(q‖p)
# ---------------------------------------------------------------------------------------------
def test_kl_matches_naive_formula_away_from_boundary():
    rng = np.random.default_rng(0)
    q = rng.uniform(0.01, 0.99, 500)
    p = rng.uniform(0.01, 0.99, 500)
    got = kl_bernoulli(q, p)
    want = np.array([naive_kl(a, b) for a, b in zip(q, p)])
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-15)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64


@pytest.mark.parametrize("p", [1e-300, 1e-20, 1e-8, 0.1, 0.5, 0.9, 1 - 1e-12])
def test_kl_exact_limits_at_q_0_and_1(p):
    assert kl_bernoulli(0.0, p) == pytest.approx(-math.log1p(-p), rel=1e-15, abs=0)
    assert kl_bernoulli(1.0, p) == pytest.approx(-math.log(p), rel=1e-15)


def test_kl_small_probabilities_keep_relative_precision():
    # kl(0‖p) = −log(1−p) ≈ p for tiny p: naive log(1−p) would return 0 here.
    assert kl_bernoulli(0.0, 1e-20) == pytest.approx(1e-20, rel=1e-14)
    assert kl_bernoulli(1e-20, 0.0) == math.inf


def test_kl_infinities_and_zeros():
    assert kl_bernoulli(0.0, 0.0) == 0.0
    assert kl_bernoulli(1.0, 1.0) == 0.0
    assert kl_bernoulli(0.3, 0.3) == 0.0
    for q in (1e-12, 0.3, 1.0):
        assert kl_bernoulli(q, 0.0) == math.inf
    for q in (0.0, 0.3, 1 - 1e-12):
        assert kl_bernoulli(q, 1.0) == math.inf
    assert isinstance(kl_bernoulli(0.2, 0.5), float)


def test_kl_torch_matches_numpy_and_is_differentiable():
    q = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)
    p = torch.tensor([0.2, 0.3, 0.5, 0.4, 0.7], dtype=torch.float64)
    out = kl_bernoulli(q, p)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), kl_bernoulli(q.numpy(), p.numpy()), rtol=1e-14)
    # gradients are finite at q ∈ {0, 1} in the p direction
    pg = p.clone().requires_grad_(True)
    kl_bernoulli(q, pg).sum().backward()
    assert torch.isfinite(pg.grad).all()
    # d/dp kl(q‖p) = (p − q)/(p(1 − p))
    np.testing.assert_allclose(pg.grad.numpy(), ((p - q) / (p * (1 - p))).numpy(), rtol=1e-12)


def test_kl_gradcheck():
    q = torch.tensor([0.05, 0.3, 0.8], dtype=torch.float64, requires_grad=True)
    p = torch.tensor([0.5, 0.01, 0.95], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(kl_bernoulli, (q, p))
    # mixed float / tensor arguments broadcast
    assert torch.autograd.gradcheck(lambda p: kl_bernoulli(0.2, p), (p,))


# ---------------------------------------------------------------------------------------------
# kl⁻¹ against brentq on a grid including the edge cases
# ---------------------------------------------------------------------------------------------
# brentq runs on a 40-digit evaluation of kl (precise_kl); a float64 naive kl would itself be off by
# ~1e-12 in p near p ≈ q because of cancellation.
Q_GRID = [0.0, 1e-12, 1e-6, 0.01, 0.1, 0.3, 0.5, 0.9, 0.999, 1 - 1e-9, 1.0]
C_GRID = [0.0, 1e-10, 1e-4, 0.01, 0.1, 1.0, 10.0, 1e3]


def test_kl_inverse_upper_matches_brentq_on_grid():
    qs, cs = np.meshgrid(Q_GRID, C_GRID, indexing="ij")
    got = kl_inverse_upper(qs, cs)
    assert got.shape == qs.shape
    for q, c, g in zip(qs.ravel(), cs.ravel(), got.ravel()):
        r = ref_upper(q, c)
        # ≤ 1e-12 absolute as required, and in fact ≤ 1e-13 relative (also for roots ~1e-56)
        assert abs(g - r) <= 1e-12 and abs(g - r) <= 1e-13 * r, (q, c, g, r)
        assert kl_inverse_upper(float(q), float(c)) == g  # scalar path == vectorised path


def test_kl_inverse_lower_matches_brentq_on_grid():
    qs, cs = np.meshgrid(Q_GRID, C_GRID, indexing="ij")
    got = kl_inverse_lower(qs, cs)
    for q, c, g in zip(qs.ravel(), cs.ravel(), got.ravel()):
        r = ref_lower(q, c)
        # ≤ 1e-12 absolute as required, and in fact ≤ 1e-13 relative (also for roots ~1e-56)
        assert abs(g - r) <= 1e-12 and abs(g - r) <= 1e-13 * r, (q, c, g, r)
        assert kl_inverse_lower(float(q), float(c)) == g


def test_kl_inverse_special_cases_exact():
    for q in Q_GRID:
        assert kl_inverse_upper(q, 0.0) == q
        assert kl_inverse_lower(q, 0.0) == q
        assert kl_inverse_upper(q, math.inf) == 1.0
        assert kl_inverse_lower(q, math.inf) == 0.0
        assert kl_inverse_lower(q, 1e3) == (0.0 if q < 0.5 else kl_inverse_lower(q, 1e3))
    assert kl_inverse_upper(1.0, 0.3) == 1.0
    assert kl_inverse_lower(0.0, 0.3) == 0.0
    assert kl_inverse_upper(0.5, 1e3) == 1.0
    assert kl_inverse_lower(0.5, 1e3) == 0.0
    for c in (1e-12, 1e-3, 0.5, 5.0, 40.0):
        # closed forms: q = 0 ⇒ 1 − e^{−c};  q = 1 ⇒ e^{−c}
        assert kl_inverse_upper(0.0, c) == pytest.approx(-math.expm1(-c), rel=1e-14)
        assert kl_inverse_lower(1.0, c) == pytest.approx(math.exp(-c), rel=1e-14)


def test_kl_inverse_rounds_outward_by_one_ulp():
    """Upper: the smallest double with kl(q‖p) > c (conservative); lower: the largest such double."""
    for q in (1e-9, 0.02, 0.5, 0.97):
        for c in (1e-6, 0.05, 2.0):
            u = kl_inverse_upper(q, c)
            assert kl_bernoulli(q, float(np.nextafter(u, -1.0))) <= c < kl_bernoulli(q, u)
            lo = kl_inverse_lower(q, c)
            assert kl_bernoulli(q, float(np.nextafter(lo, 2.0))) <= c < kl_bernoulli(q, lo)


def test_kl_inverse_rejects_invalid_inputs():
    with pytest.raises(ValueError, match="q must lie"):
        kl_inverse_upper(1.5, 0.1)
    with pytest.raises(ValueError, match="q must lie"):
        kl_inverse_lower(-0.1, 0.1)
    with pytest.raises(ValueError, match="c must be"):
        kl_inverse_upper(0.5, -1e-3)
    with pytest.raises(ValueError, match="c must be"):
        kl_inverse_upper(np.array([0.5, 0.2]), np.array([0.1, math.nan]))


# ---------------------------------------------------------------------------------------------
# hypothesis properties
# ---------------------------------------------------------------------------------------------
probs = st.one_of(
    st.floats(0.0, 1.0, allow_nan=False),
    st.sampled_from([0.0, 1.0, 1e-300, 1e-12, 1 - 1e-9, 1 - 1e-15]),
)
costs = st.one_of(st.floats(0.0, 1e3, allow_nan=False), st.sampled_from([0.0, 1e-300, 1e-12, 1e3]))


@settings(max_examples=150, deadline=None, database=None)
@given(q=probs, c1=costs, c2=costs)
def test_kl_inverse_monotone_in_c_and_brackets_q(q, c1, c2):
    c1, c2 = min(c1, c2), max(c1, c2)
    u1, u2 = kl_inverse_upper(q, c1), kl_inverse_upper(q, c2)
    l1, l2 = kl_inverse_lower(q, c1), kl_inverse_lower(q, c2)
    assert l2 <= l1 <= q <= u1 <= u2
    assert 0.0 <= l2 and u2 <= 1.0


@settings(max_examples=150, deadline=None, database=None)
@given(q=probs, c=costs)
def test_kl_of_inverse_recovers_c_when_interior(q, c):
    u = kl_inverse_upper(q, c)
    if c > 0 and u < 1.0:
        assert kl_bernoulli(q, float(np.nextafter(u, -1.0))) <= c < kl_bernoulli(q, u)
    if q < u < 1.0 - 1e-6:
        # one ulp of u moves kl by about kl'(u)·ulp(u); allow that plus relative round-off
        slope = (u - q) / (u * (1 - u))
        tol = 1e-12 * max(c, 1.0) + 4 * slope * np.spacing(u)
        assert abs(kl_bernoulli(q, u) - c) <= tol
    lo = kl_inverse_lower(q, c)
    if c > 0 and lo > 0.0:
        assert kl_bernoulli(q, float(np.nextafter(lo, 2.0))) <= c < kl_bernoulli(q, lo)
    if 1e-6 < lo < q:
        slope = (q - lo) / (lo * (1 - lo))
        tol = 1e-12 * max(c, 1.0) + 4 * slope * np.spacing(lo)
        assert abs(kl_bernoulli(q, lo) - c) <= tol


@settings(max_examples=30, deadline=None, database=None)
@given(
    q=st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=20),
    c=st.floats(0.0, 50.0, allow_nan=False),
)
def test_kl_inverse_vectorised_equals_scalar(q, c):
    qa = np.array(q)
    np.testing.assert_array_equal(kl_inverse_upper(qa, c), [kl_inverse_upper(x, c) for x in q])
    np.testing.assert_array_equal(kl_inverse_lower(qa, c), [kl_inverse_lower(x, c) for x in q])


# ---------------------------------------------------------------------------------------------
# torch: values and implicit-function gradients
# ---------------------------------------------------------------------------------------------
def test_kl_inverse_torch_values_match_numpy():
    q = torch.tensor([0.0, 0.05, 0.5, 1.0], dtype=torch.float64)
    c = torch.tensor(0.1, dtype=torch.float64)
    up = kl_inverse_upper(q, c)
    assert isinstance(up, torch.Tensor) and up.shape == q.shape and up.dtype == torch.float64
    np.testing.assert_array_equal(up.numpy(), kl_inverse_upper(q.numpy(), 0.1))
    np.testing.assert_array_equal(kl_inverse_lower(q, 0.1).numpy(), kl_inverse_lower(q.numpy(), 0.1))


def test_kl_inverse_gradcheck():
    q = torch.tensor([0.01, 0.2, 0.7], dtype=torch.float64, requires_grad=True)
    c = torch.tensor([0.3, 0.05, 0.01], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(kl_inverse_upper, (q, c))
    assert torch.autograd.gradcheck(kl_inverse_lower, (q, c))
    # broadcasting a scalar c over a vector q: gradient of c is summed correctly
    c0 = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(kl_inverse_upper, (q, c0))


def test_kl_inverse_gradient_is_zero_when_saturated():
    q = torch.tensor([1.0, 0.5], dtype=torch.float64, requires_grad=True)
    c = torch.tensor([0.1, 1e3], dtype=torch.float64, requires_grad=True)
    p = kl_inverse_upper(q, c)
    assert p.tolist() == [1.0, 1.0]
    p.sum().backward()
    assert q.grad.tolist() == [0.0, 0.0] and c.grad.tolist() == [0.0, 0.0]
