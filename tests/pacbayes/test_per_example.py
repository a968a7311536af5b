"""Per-example Monte Carlo: a fresh network per example, checked against explicit per-example weights, the
deterministic limit, and the classic m-network estimator of the same Gibbs risk."""

import math

import pytest
import torch

from lth_tune.models import build_model
from lth_tune.pacbayes import StochasticNet
from lth_tune.pacbayes.per_example import (
    mlp_linears,
    per_example_gaussian_errors,
    per_example_spike_and_slab_errors,
)
from lth_tune.pacbayes.ticket import PosteriorSpace, _gaussian_layers, bound_ticket, gibbs_error
from lth_tune.pruning import attach_masks, prune_step, trainable_parameters
from lth_tune.seeding import generator

torch.set_num_threads(1)


def _mlp(seed=0, widths=(7,)):
    torch.manual_seed(seed)
    return build_model("mlp", input_shape=(1, 6), num_classes=3, widths=list(widths))


def _data(n=400, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, generator=g)
    return x, (x.flatten(1) @ torch.randn(6, 3, generator=g)).argmax(1)


def test_local_reparameterisation_matches_explicit_per_example_weights():
    """One layer, one input: LRT pre-activations have the mean and variance of explicit W ~ N(μ, σ²) draws."""
    g = torch.Generator().manual_seed(0)
    mu, sd = torch.randn(3, 5, generator=g), torch.rand(3, 5, generator=g)
    b, sb = torch.randn(3, generator=g), 0.1 * torch.rand(3, generator=g)
    h = torch.randn(1, 5, generator=g)
    draws = 20000
    explicit = (mu + sd * torch.randn(draws, 3, 5, generator=g)) @ h[0] + b + sb * torch.randn(draws, 3, generator=g)
    lrt_mean = h @ mu.t() + b
    lrt_var = (h * h) @ (sd * sd).t() + sb * sb
    assert torch.allclose(explicit.mean(0), lrt_mean[0], atol=4 * math.sqrt(lrt_var.max() / draws))
    assert torch.allclose(explicit.var(0), lrt_var[0], rtol=0.05)


def test_zero_variance_is_the_deterministic_network():
    model = _mlp()
    x, y = _data()
    layers = [(m.weight.detach(), torch.zeros_like(m.weight), m.bias.detach(), torch.zeros_like(m.bias))
              for _, m in mlp_linears(model)]
    wrong = int((model(x).argmax(1) != y).sum())
    assert per_example_gaussian_errors(layers, x, y, 3, torch.Generator().manual_seed(0)) == 3 * wrong
    keep = [(m.weight.detach(), torch.ones_like(m.weight, dtype=torch.float64), m.bias.detach())
            for _, m in mlp_linears(model)]
    assert per_example_spike_and_slab_errors(keep, 0.0, x, y, 2, torch.Generator().manual_seed(0)) == 2 * wrong


def test_per_example_and_network_estimators_agree_on_the_gibbs_risk():
    """Both estimate R̂_S(Q); with many draws they agree within their Monte-Carlo error."""
    model = _mlp(widths=(12,))
    attach_masks(model)
    theta0 = {t.name: t.param.detach().clone() for t in trainable_parameters(model)}
    prune_step(model, 0.5, generator=torch.Generator().manual_seed(2))
    x, y = _data()
    space = PosteriorSpace.from_model(model, theta0)
    sigma_q = [torch.full_like(m, 0.3) for m in space.mean]
    for formulation in ("spike_and_slab", "gaussian"):
        per_ex = per_example_gaussian_errors(_gaussian_layers(model, space, formulation, sigma_q), x, y, 50,
                                             generator(0, "a")) / (50 * len(y))
        nets = gibbs_error(model, space, formulation, sigma_q, x, y, 400, generator(0, "b"))
        assert per_ex == pytest.approx(nets, abs=0.02), formulation


def test_ticket_certificate_counts_every_example_draw():
    model = _mlp(widths=(12,))
    attach_masks(model)
    theta0 = {t.name: t.param.detach().clone() for t in trainable_parameters(model)}
    prune_step(model, 0.5, generator=torch.Generator().manual_seed(2))
    x, y = _data()
    per_ex = bound_ticket(model, theta0, x, y, formulation="spike_and_slab", prior_sigma=0.3, steps=0,
                          mc_mode="per_example", mc_passes=5)
    nets = bound_ticket(model, theta0, x, y, formulation="spike_and_slab", prior_sigma=0.3, steps=0, mc_samples=5)
    assert per_ex.certificate.m == 5 * len(y) and nets.certificate.m == 5
    # same posterior, same KL; many more Monte-Carlo draws: a smaller sample-convergence slack
    assert per_ex.certificate.kl == nets.certificate.kl
    slack = lambda c: c.risk_upper - c.emp_risk_mc
    assert slack(per_ex.certificate) < slack(nets.certificate)
    with pytest.raises(ValueError, match="per-example Monte Carlo needs an MLP"):
        conv = build_model("conv1d", input_shape=(1, 40), num_classes=3)
        attach_masks(conv)
        t0 = {t.name: t.param.detach().clone() for t in trainable_parameters(conv)}
        bound_ticket(conv, t0, torch.randn(8, 1, 40), torch.zeros(8, dtype=torch.long), formulation="gaussian",
                     prior_sigma=0.1, steps=0, mc_mode="per_example")


def test_stochastic_net_per_example_matches_its_network_estimate():
    model = _mlp(widths=(10,))
    net = StochasticNet(model, sigma=0.05, keep_probs={n: torch.full_like(m.weight, 0.7, dtype=torch.float64)
                                                      for n, m in mlp_linears(model)})
    x, y = _data()
    per_ex = net.per_example_errors(x, y, 40, generator=torch.Generator().manual_seed(0)) / (40 * len(y))
    nets = float(net.sample_errors(x, y, 300, generator=torch.Generator().manual_seed(1)).mean())
    assert per_ex == pytest.approx(nets, abs=0.02)


def test_per_example_needs_an_mlp_in_the_study():
    from lth_tune.config import StudyError, study_from_dict

    with pytest.raises(StudyError, match="bound.mc_mode: per_example needs an MLP"):
        study_from_dict({"name": "x", "experiment": {"model": {"name": "conv1d"},
                                                     "bound": {"levels": "last", "mc_mode": "per_example"}}})
