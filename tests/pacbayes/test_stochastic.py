"""Stochastic spike-and-slab network: mappings, prior initialisation (App. A.1), sampling, KL, objective."""

import math

import pytest
import torch
from torch import nn

from lth_tune.models import build_model
from lth_tune.pacbayes import (
    StochasticNet,
    bounded_cross_entropy,
    criterion_scores,
    initial_keep_probabilities,
    keep_probability,
    score_from_probability,
    spike_and_slab_kl,
    theorem1_bound,
    top_k_masks,
)
from lth_tune.pacbayes.stochastic import CLAMP_EPS


def small_mlp(seed=0, widths=(8,)):
    torch.manual_seed(seed)
    return build_model("mlp", input_shape=(1, 12), num_classes=4, widths=list(widths))


def random_net(mapping="sigmoid", sigma=0.1, seed=0):
    model = small_mlp(seed)
    g = torch.Generator().manual_seed(seed + 1)
    keep = {n: 0.05 + 0.9 * torch.rand(m.weight.shape, generator=g, dtype=torch.float64)
            for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    return StochasticNet(model, sigma=sigma, mapping=mapping, keep_probs=keep)


# ------------------------------------------------------------------------------------------- mappings
def test_sigmoid_and_clamp_mappings():
    s = torch.tensor([-50.0, -2.0, 0.0, 0.3, 2.0, 50.0], dtype=torch.float64)
    assert torch.allclose(keep_probability(s, "sigmoid"), torch.sigmoid(s))
    c = keep_probability(s, "clamp")
    assert c.tolist() == [CLAMP_EPS, CLAMP_EPS, CLAMP_EPS, 0.3, 1 - CLAMP_EPS, 1 - CLAMP_EPS]
    lam = torch.tensor([1e-4, 0.1, 0.5, 0.9, 1 - 1e-4], dtype=torch.float64)
    for mapping in ("sigmoid", "clamp"):
        back = keep_probability(score_from_probability(lam, mapping), mapping)
        assert torch.allclose(back, lam, rtol=1e-12, atol=0)
    # gradients pass inside (0, 1), vanish outside for clamp
    s = torch.tensor([0.5, 2.0], dtype=torch.float64, requires_grad=True)
    keep_probability(s, "clamp").sum().backward()
    assert s.grad.tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="mapping"):
        keep_probability(s, "tanh")


# ------------------------------------------------------------------------------------- prior (App. A.1)
@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.9, 0.95])
def test_block_isotropic_prior_has_expected_sparsity_exactly(sparsity):
    g = torch.Generator().manual_seed(0)
    scores = {"a": torch.rand(40, 10, generator=g), "b": torch.rand(20, 20, generator=g)}  # D = 800
    eps = 1e-4
    lam = initial_keep_probabilities(scores, sparsity, shape="block_isotropic", epsilon=eps)
    flat = torch.cat([v.reshape(-1) for v in lam.values()])
    d = flat.numel()
    assert flat.dtype == torch.float64
    assert math.isclose(float(flat.sum()), (1 - sparsity) * d, rel_tol=0, abs_tol=1e-9)  # E[#kept] = (1-s)D
    assert math.isclose(float(1 - flat.mean()), sparsity, rel_tol=0, abs_tol=1e-12)
    high = 1 - eps * sparsity / (1 - sparsity)  # eq. (6)
    assert sorted(torch.unique(flat).tolist()) == pytest.approx([eps, high], rel=1e-12)
    assert torch.allclose(flat.max(), torch.tensor(high, dtype=torch.float64), rtol=1e-12, atol=0)
    assert float(flat.min()) == eps
    # the high block is the top-k by score
    all_scores = torch.cat([v.reshape(-1) for v in scores.values()])
    top = flat > 0.5
    assert int(top.sum()) == round((1 - sparsity) * d)
    assert all_scores[top].min() >= all_scores[~top].max()


def test_block_isotropic_with_non_integer_k_keeps_expectation_k():
    scores = {"w": torch.arange(7.0)}
    lam = initial_keep_probabilities(scores, 0.5, epsilon=0.01)  # k = round(3.5) = 4
    assert math.isclose(float(lam["w"].sum()), 4.0, abs_tol=1e-12)
    assert lam["w"][:3].tolist() == [0.01] * 3


def test_isotropic_prior_is_one_minus_s_and_eps_condition():
    scores = {"w": torch.rand(5, 5)}
    lam = initial_keep_probabilities(scores, 0.8, shape="isotropic")
    assert torch.all(lam["w"] == 1 - 0.8) and lam["w"].dtype == torch.float64
    with pytest.raises(ValueError, match="epsilon"):
        initial_keep_probabilities(scores, 0.96, epsilon=0.1)  # ε s/(1−s) = 2.4 ≥ 1


def test_top_k_masks_are_global_with_deterministic_ties():
    scores = {"a": torch.tensor([1.0, 5.0, 3.0]), "b": torch.tensor([[3.0, 0.5], [4.0, 3.0]])}
    masks = top_k_masks(scores, 3 / 7)  # keep 3 of 7: 5, 4 and one of the three 3s (the last one wins)
    assert masks["a"].tolist() == [False, True, False]
    assert masks["b"].tolist() == [[False, False], [True, True]]


def test_criterion_scores_magnitude_snip_random():
    model = small_mlp()
    layers = ["fc_layers.0", "fc"]
    x, y = torch.randn(16, 1, 12), torch.randint(0, 4, (16,))
    mag = criterion_scores(model, layers, "magnitude")
    assert torch.equal(mag["fc"], model.fc.weight.detach().abs())
    snip = criterion_scores(model, layers, "snip", batch=(x, y))
    loss = nn.functional.cross_entropy(model(x), y)
    grad = torch.autograd.grad(loss, model.fc.weight)[0]
    assert torch.allclose(snip["fc"], (model.fc.weight * grad).abs().detach())
    r1 = criterion_scores(model, layers, "random", generator=torch.Generator().manual_seed(3))
    r2 = criterion_scores(model, layers, "random", generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(r1[n], r2[n]) for n in layers)
    with pytest.raises(ValueError, match="snip"):
        criterion_scores(model, layers, "snip")


# -------------------------------------------------------------------------------------------- sampling
def test_relaxed_bernoulli_samples_in_open_unit_interval_and_tend_to_bernoulli():
    net = random_net()
    score = net.scores[0]
    lam = keep_probability(score.detach(), "sigmoid")
    torch.manual_seed(0)
    s = net.relaxed_mask(score, 0.5)
    assert s.requires_grad and torch.all((s > 0) & (s < 1))
    # as β → 0 the concrete samples become {0, 1}-valued with mean λ
    samples = torch.stack([net.relaxed_mask(score.detach(), 1e-3) for _ in range(4000)])
    assert ((samples < 1e-3) | (samples > 1 - 1e-3)).float().mean() > 0.99
    assert (samples.mean(0) - lam).abs().mean() < 0.02
    # at β = 0.5 the mean is pulled towards 1/2 but ordered like λ
    warm = torch.stack([net.relaxed_mask(score.detach(), 0.5) for _ in range(500)]).mean(0)
    assert torch.corrcoef(torch.stack([warm.reshape(-1), lam.reshape(-1)]))[0, 1] > 0.9


def test_bernoulli_samples_follow_lambda_and_spike_is_exactly_zero():
    net = random_net(sigma=0.0)
    g = torch.Generator().manual_seed(0)
    kept = torch.stack([(net.sample_weights("bernoulli", generator=g)["fc.weight"] != 0).double()
                        for _ in range(3000)])
    lam = net.keep_probs()["fc"].detach()
    assert (kept.mean(0) - lam).abs().max() < 0.05
    w = net.sample_weights("bernoulli", generator=g)["fc.weight"]
    assert torch.all((w == 0) | (w == net.model.fc.weight))
    # slab noise is N(W, σ²)
    net2 = random_net(sigma=0.5)
    ws = torch.stack([net2.sample_weights("bernoulli", generator=g)["fc.weight"].detach() for _ in range(2000)])
    on = ws != 0
    dev = (ws - net2.model.fc.weight.detach())[on]
    assert abs(float(dev.std()) - 0.5) < 0.02 and abs(float(dev.mean())) < 0.02


def test_generator_makes_samples_reproducible():
    net = random_net()
    a = net.sample_weights("bernoulli", generator=torch.Generator().manual_seed(5))
    b = net.sample_weights("bernoulli", generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name,shape,kw", [("mlp", (1, 40), {"widths": [16]}), ("conv1d", (1, 40), {"width": 4}),
                                           ("lenet5", (1, 28, 28), {}), ("resnet20", (3, 32, 32), {"width": 4})])
def test_every_model_family_runs(name, shape, kw):
    torch.manual_seed(0)
    model = build_model(name, input_shape=shape, num_classes=10, **kw)
    net = StochasticNet(model, sigma=0.01)
    x = torch.randn(3, *shape)
    net.eval()
    assert torch.allclose(net(x, "mean"), model(x))
    out = net(x, "relaxed")
    out.sum().backward()
    assert all(s.grad is not None for s in net.scores)
    errs = net.sample_errors(x, torch.zeros(3, dtype=torch.long), 2, generator=torch.Generator().manual_seed(0))
    assert errs.shape == (2,) and torch.all((errs >= 0) & (errs <= 1))


def test_freeze_keeps_batchnorm_in_eval_and_deterministic_params_fixed():
    torch.manual_seed(0)
    model = build_model("resnet20", input_shape=(3, 32, 32), num_classes=10, width=4)
    net = StochasticNet(model, sigma=0.01)
    net.freeze_deterministic()
    net.train()
    assert not model.bn.training and model.training
    assert all(not p.requires_grad for p in net.deterministic_parameters())
    before = model.bn.running_mean.clone()
    net(torch.randn(4, 3, 32, 32), "relaxed")
    assert torch.equal(model.bn.running_mean, before)


# ------------------------------------------------------------------------------------------ KL, objective
@pytest.mark.parametrize("mapping", ["sigmoid", "clamp"])
def test_kl_equals_spike_and_slab_kl_on_its_parameters(mapping):
    net = random_net(mapping=mapping, sigma=0.05)
    prior = net.distribution()
    assert float(net.kl(prior).detach()) == 0.0
    with torch.no_grad():
        for s in net.scores:
            s.add_(0.1 * torch.randn_like(s)) if mapping == "sigmoid" else s.mul_(0.9)
        for w in net.prunable_parameters():
            w.add_(0.01 * torch.randn_like(w))
    kl = net.kl(prior)
    lam_q = {n: keep_probability(s, mapping) for n, s in zip(net.layers, net.scores)}
    ref = spike_and_slab_kl(lam_q, prior["keep"], net.weights(), prior["mean"], 0.05, 0.05)
    assert kl.dtype == torch.float64 and torch.allclose(kl, ref, rtol=1e-12)
    # closed form: Σ kl(λ‖λ0) + λ (W − W0)² / (2σ²)
    manual = 0.0
    for n in net.layers:
        q, p = lam_q[n].detach(), prior["keep"][n]
        d2 = (net.weights()[n].detach().double() - prior["mean"][n].double()) ** 2
        manual += float((q * (q / p).log() + (1 - q) * ((1 - q) / (1 - p)).log() + q * d2 / (2 * 0.05**2)).sum())
    assert math.isclose(float(kl.detach()), manual, rel_tol=1e-9)
    # the biases are not part of the distribution
    assert {id(p) for p in net.deterministic_parameters()} == {id(net.model.fc.bias), id(net.model.fc_layers[0].bias)}


def test_theorem1_objective_is_differentiable_in_probabilities_and_weights():
    net = random_net(sigma=0.05)
    prior = net.distribution()
    with torch.no_grad():
        for w in net.prunable_parameters():
            w.add_(0.01)
    x, y = torch.randn(32, 1, 12), torch.randint(0, 4, (32,))
    torch.manual_seed(0)
    risk = bounded_cross_entropy(net(x, "relaxed", beta=0.5), y, 1e-4).double()
    bound = theorem1_bound(risk, net.kl(prior), 1000, 0.05)
    bound.backward()
    for p in list(net.scores) + net.prunable_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert 0 < float(risk.detach()) <= 1 and float(bound.detach()) > float(risk.detach())


def test_bounded_cross_entropy_lies_in_unit_interval_with_floor():
    logits = torch.tensor([[100.0, -100.0], [-100.0, 100.0], [0.0, 0.0]])
    y = torch.tensor([0, 0, 0])
    per = [float(bounded_cross_entropy(logits[i : i + 1], y[i : i + 1], 1e-4)) for i in range(3)]
    assert per[0] == pytest.approx(0.0, abs=1e-12)
    assert per[1] == pytest.approx(1.0)  # floored at 1e-4: −log(1e-4)/log(1e4) = 1
    assert per[2] == pytest.approx(math.log(2) / math.log(1e4))
