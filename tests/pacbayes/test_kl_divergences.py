"""Gaussian and spike-and-slab KL divergences (paper 004 App. B.4, paper 000 eqs. (2)–(5))."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch.distributions import Normal, kl_divergence

from lth_tune.pacbayes.kl_divergences import (
    gaussian_kl,
    gaussian_kl_zero_mean_prior,
    spike_and_slab_kl,
    spike_and_slab_kl_from_mask,
)

F64 = torch.float64


def t(x):
    return torch.tensor(x, dtype=F64)


# ---------------------------------------------------------------------------------------------
# Gaussian KL
# ---------------------------------------------------------------------------------------------
def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mq, mp = torch.randn(50, generator=g, dtype=F64), torch.randn(50, generator=g, dtype=F64)
    sq, sp = torch.rand(50, generator=g, dtype=F64) + 0.05, torch.rand(50, generator=g, dtype=F64) + 0.05
    want = kl_divergence(Normal(mq, sq), Normal(mp, sp))
    torch.testing.assert_close(gaussian_kl(mq, sq, mp, sp, reduction="none"), want, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gaussian_kl(mq, sq, mp, sp), want.sum(), rtol=1e-12, atol=1e-14)


def test_gaussian_kl_sigma_are_standard_deviations_and_broadcast():
    # KL(N(0, 2²)‖N(1, 4²)) = log(4/2) + (4 + 1)/(2·16) − ½
    want = math.log(2.0) + 5.0 / 32.0 - 0.5
    assert gaussian_kl(0.0, 2.0, 1.0, 4.0).item() == pytest.approx(want, rel=1e-14)
    out = gaussian_kl(torch.zeros(3, 4, dtype=F64), 2.0, 1.0, 4.0)
    assert out.shape == () and out.item() == pytest.approx(12 * want, rel=1e-13)


def test_gaussian_kl_is_accurate_when_sigmas_nearly_equal():
    # ψ(r) = r − 1 − log r ≈ (r−1)²/2 would cancel catastrophically if computed naively.
    s = 1.0 + 1e-9
    r = s * s
    want = 0.5 * ((r - 1) ** 2 / 2 - (r - 1) ** 3 / 3)
    assert gaussian_kl(0.0, s, 0.0, 1.0).item() == pytest.approx(want, rel=1e-6)
    assert gaussian_kl(0.3, 0.7, 0.3, 0.7).item() == 0.0


def test_gaussian_kl_gradcheck():
    g = torch.Generator().manual_seed(1)
    args = [
        torch.randn(5, generator=g, dtype=F64),
        torch.rand(5, generator=g, dtype=F64) + 0.1,
        torch.randn(5, generator=g, dtype=F64),
        torch.rand(5, generator=g, dtype=F64) + 0.1,
    ]
    args = [a.requires_grad_(True) for a in args]
    assert torch.autograd.gradcheck(gaussian_kl, args)


# ---------------------------------------------------------------------------------------------
# spike-and-slab KL: exactness against independent computations in 1-D
# ---------------------------------------------------------------------------------------------
ONE_D = {"lambda_q": 0.7, "lambda_p": 0.3, "mean_q": 0.5, "mean_p": 0.1, "sigma_q": 0.4, "sigma_p": 0.6}


def _spike_slab_logratio(x, is_slab, lq, lp, mq, mp, sq, sp):
    """log dQ/dP of two spike-and-slab mixtures w.r.t. the measure δ_0 + Lebesgue."""
    slab = np.log(lq) + stats.norm.logpdf(x, mq, sq) - np.log(lp) - stats.norm.logpdf(x, mp, sp)
    spike = np.log(1 - lq) - np.log(1 - lp)
    return np.where(is_slab, slab, spike)


def test_spike_and_slab_kl_equals_monte_carlo_estimate():
    rng = np.random.default_rng(1234)
    lq, lp, mq, mp, sq, sp = ONE_D.values()
    n = 400_000
    is_slab = rng.random(n) < lq
    x = np.where(is_slab, rng.normal(mq, sq, n), 0.0)
    samples = _spike_slab_logratio(x, is_slab, lq, lp, mq, mp, sq, sp)
    mc, se = samples.mean(), samples.std() / math.sqrt(n)
    got = spike_and_slab_kl(**ONE_D).item()
    assert abs(got - mc) < 4 * se, (got, mc, se)


def test_spike_and_slab_kl_equals_numerical_integral():
    lq, lp, mq, mp, sq, sp = ONE_D.values()
    spike = (1 - lq) * math.log((1 - lq) / (1 - lp))

    def slab_integrand(x):
        dq = lq * stats.norm.pdf(x, mq, sq)
        return dq * math.log(dq / (lp * stats.norm.pdf(x, mp, sp)))

    slab, _ = integrate.quad(slab_integrand, -10, 10, epsabs=1e-13, epsrel=1e-13)
    assert spike_and_slab_kl(**ONE_D).item() == pytest.approx(spike + slab, rel=1e-10)


def test_spike_and_slab_kl_special_cases():
    # identical mixtures ⇒ 0
    assert spike_and_slab_kl(0.4, 0.4, 1.5, 1.5, 0.2, 0.2).item() == 0.0
    # λ_q = 1 ⇒ −log λ_p + Gaussian KL
    want = -math.log(0.1) + gaussian_kl(0.5, 0.1, 0.2, 0.3).item()
    assert spike_and_slab_kl(1.0, 0.1, 0.5, 0.2, 0.1, 0.3).item() == pytest.approx(want, rel=1e-14)
    # λ_q = 0 ⇒ −log(1 − λ_p), slab parameters ignored (even σ_q = 0 gives no NaN/∞)
    assert spike_and_slab_kl(0.0, 0.1, 7.0, 0.2, 0.0, 0.3).item() == pytest.approx(-math.log(0.9), rel=1e-14)
    # λ_p ∈ {0, 1} disagreeing with λ_q ⇒ +∞
    assert spike_and_slab_kl(0.5, 1.0, 0.0, 0.0, 1.0, 1.0).item() == math.inf
    assert spike_and_slab_kl(0.5, 0.0, 0.0, 0.0, 1.0, 1.0).item() == math.inf


def test_spike_and_slab_kl_paper000_eq3_form():
    """Paper 000 eq. (3): Σ λ_q (log σ_p/σ_q + (σ_q² + (θ̄ − θ_init)²)/(2σ_p²) − ½) + kl(λ_q‖λ_p)."""
    g = torch.Generator().manual_seed(3)
    lq = torch.rand(20, generator=g, dtype=F64)
    lp = torch.rand(20, generator=g, dtype=F64)
    th, th0 = torch.randn(20, generator=g, dtype=F64), torch.randn(20, generator=g, dtype=F64)
    sq, sp = torch.rand(20, generator=g, dtype=F64) + 0.01, torch.rand(20, generator=g, dtype=F64) + 0.01
    kl_b = lq * torch.log(lq / lp) + (1 - lq) * torch.log((1 - lq) / (1 - lp))
    eq3 = (lq * (torch.log(sp / sq) + (sq**2 + (th - th0) ** 2) / (2 * sp**2) - 0.5) + kl_b).sum()
    torch.testing.assert_close(spike_and_slab_kl(lq, lp, th, th0, sq, sp), eq3, rtol=1e-12, atol=0)


def test_spike_and_slab_kl_gradcheck_and_finite_grads_at_pruned():
    g = torch.Generator().manual_seed(2)
    lq = (torch.rand(6, generator=g, dtype=F64) * 0.8 + 0.1).requires_grad_(True)
    mq = torch.randn(6, generator=g, dtype=F64).requires_grad_(True)
    sq = (torch.rand(6, generator=g, dtype=F64) + 0.1).requires_grad_(True)
    lp, mp, sp = 0.2, torch.randn(6, generator=g, dtype=F64), 0.5
    assert torch.autograd.gradcheck(lambda a, b, c: spike_and_slab_kl(a, lp, b, mp, c, sp), (lq, mq, sq))
    # λ_q = 0 entries with σ_q = 0: slab gradients are exactly 0, not NaN
    lq0 = t([0.0, 1.0]).requires_grad_(True)
    mq0 = t([3.0, 0.5]).requires_grad_(True)
    sq0 = t([0.0, 0.2]).requires_grad_(True)
    spike_and_slab_kl(lq0, 0.1, mq0, 0.0, sq0, 0.3).backward()
    assert mq0.grad[0] == 0 and sq0.grad[0] == 0
    assert torch.isfinite(mq0.grad).all() and torch.isfinite(sq0.grad).all()


# ---------------------------------------------------------------------------------------------
# mask form (paper 000 eq. (5)) and the Measure-2 Gaussian baseline
# ---------------------------------------------------------------------------------------------
def _ticket(seed=0, n=200, density=0.1):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, generator=g) < density
    theta = torch.randn(n, generator=g, dtype=F64)
    theta_init = theta + 0.1 * torch.randn(n, generator=g, dtype=F64)
    sigma_q = torch.rand(n, generator=g, dtype=F64) * 0.05 + 0.01
    return mask, theta, theta_init, sigma_q


def test_from_mask_equals_general_form_with_lambda_q_in_0_1():
    mask, theta, theta_init, sigma_q = _ticket()
    got = spike_and_slab_kl_from_mask(mask, theta, theta_init, sigma_q, 0.1, 0.1)
    want = spike_and_slab_kl(mask.to(F64), 0.1, theta, theta_init, sigma_q, 0.1)
    torch.testing.assert_close(got, want, rtol=1e-13, atol=0)


def test_from_mask_hand_computation():
    mask = torch.tensor([True, False, True, False, False])
    theta, theta_init = t([0.3, 9.0, -0.2, 9.0, 9.0]), t([0.1, 0.0, -0.1, 0.0, 0.0])
    sq, sp, lam = 0.05, 0.1, 0.1
    gam = [
        0.5 * (sq**2 / sp**2 + (a - b) ** 2 / sp**2 - math.log(sq**2 / sp**2) - 1)
        for a, b in ((0.3, 0.1), (-0.2, -0.1))
    ]
    want = sum(gam) - 2 * math.log(lam) - 3 * math.log(1 - lam)
    assert spike_and_slab_kl_from_mask(mask, theta, theta_init, sq, sp, lam).item() == pytest.approx(
        want, rel=1e-13
    )
    per = spike_and_slab_kl_from_mask(mask, theta, theta_init, sq, sp, lam, reduction="none")
    assert per.shape == (5,)
    assert per[1].item() == pytest.approx(-math.log(0.9), rel=1e-14)


def test_from_mask_accepts_layer_dicts_and_float_masks():
    m1, th1, th01, sq1 = _ticket(1, 30)
    m2, th2, th02, sq2 = _ticket(2, 12)
    whole = spike_and_slab_kl_from_mask(
        torch.cat([m1, m2]).float(),
        torch.cat([th1, th2]),
        torch.cat([th01, th02]),
        torch.cat([sq1, sq2]),
        0.2,
        0.1,
    )
    layered = spike_and_slab_kl_from_mask(
        {"a": m1, "b": m2}, {"a": th1, "b": th2}, {"a": th01, "b": th02}, {"a": sq1, "b": sq2}, 0.2, 0.1
    )
    torch.testing.assert_close(layered, whole, rtol=1e-13, atol=0)
    per = spike_and_slab_kl_from_mask(
        {"a": m1, "b": m2}, {"a": th1, "b": th2}, {"a": th01, "b": th02}, 0.05, 0.2, 0.1, reduction="none"
    )
    assert set(per) == {"a", "b"} and per["a"].shape == (30,)
    with pytest.raises(ValueError, match="layer keys"):
        spike_and_slab_kl_from_mask({"a": m1}, {"a": th1, "b": th2}, {"a": th01}, 0.05, 0.2, 0.1)


def test_from_mask_gradcheck_and_density_validation():
    mask, theta, theta_init, sigma_q = _ticket(4, 15, density=0.5)
    theta.requires_grad_(True)
    sigma_q.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, s: spike_and_slab_kl_from_mask(mask, a, theta_init, s, 0.2, 0.3), (theta, sigma_q)
    )
    # pruned weights do not depend on θ or σ_q
    spike_and_slab_kl_from_mask(mask, theta, theta_init, sigma_q, 0.2, 0.3).backward()
    assert (theta.grad[~mask] == 0).all() and (sigma_q.grad[~mask] == 0).all()
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="density_p"):
            spike_and_slab_kl_from_mask(mask, theta, theta_init, 0.1, 0.1, bad)


def test_sparser_ticket_has_smaller_from_mask_kl_at_init():
    """Paper 000 §4.4.1: rewinding θ → θ_init and pruning more lowers the KL (λ_p = target density)."""
    n, g = 1000, torch.Generator().manual_seed(5)
    theta_init = torch.randn(n, generator=g, dtype=F64)
    order = torch.randperm(n, generator=g)
    kls = []
    for density in (0.8, 0.5, 0.2, 0.1):
        mask = torch.zeros(n, dtype=torch.bool)
        mask[order[: int(density * n)]] = True
        kls.append(spike_and_slab_kl_from_mask(mask, theta_init, theta_init, 0.1, 0.1, 0.1).item())
    assert kls == sorted(kls, reverse=True)


def test_gaussian_zero_mean_prior_measure2():
    mask, theta, _, sigma_q = _ticket(6, 40, density=0.3)
    sp = 0.3
    got = gaussian_kl_zero_mean_prior(theta, sigma_q, sp, mask)
    eff = torch.where(mask, theta, torch.zeros_like(theta))
    want = kl_divergence(Normal(eff, sigma_q), Normal(torch.zeros_like(eff), torch.full_like(eff, sp))).sum()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    # pruned weights still pay the σ-mismatch term ½ψ(σ_q²/σ_p²) (noise on all weights)
    per = gaussian_kl_zero_mean_prior(theta, sigma_q, sp, mask, reduction="none")
    r = (sigma_q[~mask] / sp) ** 2
    torch.testing.assert_close(per[~mask], 0.5 * (r - 1 - torch.log(r)), rtol=1e-12, atol=0)
    # mask=None means θ is already the effective weight vector
    torch.testing.assert_close(gaussian_kl_zero_mean_prior(eff, sigma_q, sp), got, rtol=1e-14, atol=0)
