"""Paper 004 Theorem 1 (eq. (4)) and Theorem 2 (Langford–Seeger, eq. (7))."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lth_tune.pacbayes.kl import kl_bernoulli, kl_inverse_upper
from lth_tune.pacbayes.theorems import bound_epsilon, kl_bound, theorem1_bound

F64 = torch.float64


def test_epsilon_hand_computation():
    # n = (1 − α)|S| = 0.4 · 50000 = 20000 examples in the bound split
    assert bound_epsilon(100.0, 20000, 0.05) == pytest.approx(
        (100 + math.log(2 * math.sqrt(20000) / 0.05)) / 20000, rel=1e-15
    )


def test_theorem1_hand_computation_fast_branch():
    r, kl, n, delta = 0.1, 100.0, 10000, 0.05
    eps = (kl + math.log(2 * 100 / 0.05)) / 10000  # = (100 + log 4000)/10000
    fast = eps + math.sqrt(eps * (eps + 2 * r))
    slow = math.sqrt(eps / 2)
    assert fast < slow
    assert theorem1_bound(r, kl, n, delta) == pytest.approx(r + fast, rel=1e-14)


def test_theorem1_hand_computation_slow_branch():
    r, kl, n, delta = 0.5, 95.0, 10000, 0.05
    eps = (kl + math.log(2 * 100 / 0.05)) / 10000
    fast = eps + math.sqrt(eps * (eps + 2 * r))
    slow = math.sqrt(eps / 2)
    assert slow < fast
    assert theorem1_bound(r, kl, n, delta) == pytest.approx(r + slow, rel=1e-14)


def test_theorem1_min_switches_branch_at_eps_one_eighth_for_zero_risk():
    # With R̂ = 0: fast = 2ε, slow = √(ε/2); they cross at ε = 1/8.
    n, delta = 1000, 0.1
    log_term = math.log(2 * math.sqrt(n) / delta)
    for eps, branch in ((0.1, "fast"), (0.125, "tie"), (0.2, "slow")):
        kl = eps * n - log_term
        b = theorem1_bound(0.0, kl, n, delta)
        if branch == "fast":
            assert b == pytest.approx(2 * eps, rel=1e-12) and 2 * eps < math.sqrt(eps / 2)
        elif branch == "slow":
            assert b == pytest.approx(math.sqrt(eps / 2), rel=1e-12) and math.sqrt(eps / 2) < 2 * eps
        else:
            assert b == pytest.approx(0.25, rel=1e-12)


def test_kl_bound_is_the_inverse_at_epsilon():
    r, kl, n, delta = 0.03, 250.0, 30000, 0.025
    eps = (kl + math.log(2 * math.sqrt(n) / delta)) / n
    b = kl_bound(r, kl, n, delta)
    assert b == kl_inverse_upper(r, eps)
    assert kl_bernoulli(r, b) == pytest.approx(eps, rel=1e-10)


@settings(max_examples=150, deadline=None, database=None)
@given(
    r=st.floats(0.0, 1.0, allow_nan=False),
    kl=st.floats(0.0, 1e5, allow_nan=False),
    n=st.integers(1, 10**7),
    delta=st.floats(1e-6, 0.5),
)
def test_bounds_are_above_risk_and_kl_bound_is_tighter(r, kl, n, delta):
    t1 = theorem1_bound(r, kl, n, delta)
    kb = kl_bound(r, kl, n, delta)
    assert r <= kb <= 1.0
    assert r <= t1
    assert kb <= t1 + 1e-12  # Theorem 1 relaxes kl⁻¹ (Pinsker / the refined Pinsker inequality)


@pytest.mark.parametrize("fn", [theorem1_bound, kl_bound])
def test_bounds_decrease_with_n(fn):
    ns = [100, 1000, 10_000, 100_000, 1_000_000]
    values = [fn(0.05, 50.0, n, 0.05) for n in ns]
    assert all(a > b for a, b in itertools.pairwise(values))
    assert all(v >= 0.05 for v in values)


@pytest.mark.parametrize("fn", [theorem1_bound, kl_bound])
def test_bounds_increase_with_kl_and_risk_and_smaller_delta(fn):
    assert fn(0.05, 10.0, 5000, 0.05) < fn(0.05, 100.0, 5000, 0.05)
    assert fn(0.05, 10.0, 5000, 0.05) < fn(0.10, 10.0, 5000, 0.05)
    assert fn(0.05, 10.0, 5000, 0.05) < fn(0.05, 10.0, 5000, 0.005)


def test_bounds_vectorised_over_arrays():
    r = np.array([0.0, 0.1, 0.5])
    out = theorem1_bound(r, 10.0, 1000, 0.05)
    np.testing.assert_array_equal(out, [theorem1_bound(x, 10.0, 1000, 0.05) for x in r])
    out = kl_bound(r, np.array([10.0, 20.0, 30.0]), 1000, 0.05)
    np.testing.assert_array_equal(out, [kl_bound(x, k, 1000, 0.05) for x, k in zip(r, (10.0, 20.0, 30.0))])


@pytest.mark.parametrize(
    "args, match",
    [
        ((0.1, 10.0, 0, 0.05), "n"),
        ((0.1, 10.0, -5, 0.05), "n"),
        ((0.1, 10.0, 10.5, 0.05), "n"),
        ((0.1, 10.0, 100, 0.0), "delta"),
        ((0.1, 10.0, 100, 1.0), "delta"),
        ((1.2, 10.0, 100, 0.05), "risk"),
        ((-0.1, 10.0, 100, 0.05), "risk"),
        ((0.1, -1.0, 100, 0.05), "KL"),
        ((0.1, math.nan, 100, 0.05), "KL"),
    ],
)
@pytest.mark.parametrize("fn", [theorem1_bound, kl_bound])
def test_invalid_inputs_raise(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args)


# ---------------------------------------------------------------------------------------------
# torch: same values, gradients for bound optimisation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [theorem1_bound, kl_bound])
def test_torch_matches_float(fn):
    r, kl = torch.tensor(0.07, dtype=F64), torch.tensor(123.0, dtype=F64)
    out = fn(r, kl, 20000, 0.05)
    assert isinstance(out, torch.Tensor) and out.dtype == F64
    assert out.item() == pytest.approx(fn(0.07, 123.0, 20000, 0.05), rel=1e-14)
    # mixed: tensor KL with a float risk
    assert fn(0.07, kl, 20000, 0.05).item() == pytest.approx(out.item(), rel=1e-14)


@pytest.mark.parametrize("r0, kl0", [(0.05, 200.0), (0.6, 3000.0)])  # fast branch, slow branch
def test_theorem1_gradcheck_both_branches(r0, kl0):
    r = torch.tensor([r0], dtype=F64, requires_grad=True)
    kl = torch.tensor([kl0], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: theorem1_bound(a, b, 10000, 0.05), (r, kl))


def test_kl_bound_gradcheck():
    r = torch.tensor([0.02, 0.3], dtype=F64, requires_grad=True)
    kl = torch.tensor([50.0, 800.0], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: kl_bound(a, b, 5000, 0.05), (r, kl))
