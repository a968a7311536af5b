"""PAC-Bayes bounds of a trained ticket (lth_tune.pacbayes.ticket) on a tiny masked MLP."""

from __future__ import annotations

import math

import pytest
import torch

from lth_tune.data import DataBundle, Split
from lth_tune.models import build_model
from lth_tune.pacbayes import (
    certify,
    gaussian_kl,
    gaussian_kl_zero_mean_prior,
    kl_inverse_upper,
    spike_and_slab_kl_from_mask,
)
from lth_tune.pacbayes.ticket import (
    PREFIXES,
    PosteriorSpace,
    bound_ticket,
    certify_ticket,
    posterior_kl,
)
from lth_tune.pruning import attach_masks, density, masked_layers, prune_step, trainable_parameters

torch.set_num_threads(1)

N_TRAIN = 96


def _bundle(seed: int = 0) -> DataBundle:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(8, 3, generator=g)

    def split(n: int) -> Split:
        x = torch.randn(n, 1, 8, generator=g)
        y = (x.flatten(1) @ w).argmax(1)
        return Split(x, y)

    train = split(N_TRAIN)
    return DataBundle(train=train, val=split(16), test=split(32), num_classes=3, input_shape=(1, 8),
                      augment=False, noisy=torch.zeros(N_TRAIN, dtype=torch.bool))


@pytest.fixture(scope="module")
def ticket():
    """A 50%-sparse MLP (8 → 6 → 3), briefly trained away from its initialisation."""
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(1, 8), num_classes=3, widths=[6])
    attach_masks(model)
    theta_init = {t.name: t.param.detach().clone() for t in trainable_parameters(model)}
    prune_step(model, 0.5, criterion="random", generator=torch.Generator().manual_seed(1))
    data = _bundle()
    params = [p for p in model.parameters() if p.requires_grad]
    for _ in range(30):  # plain gradient descent (torch.optim would import torch._dynamo: seconds)
        loss = torch.nn.functional.cross_entropy(model(data.train.x), data.train.y)
        with torch.no_grad():
            for p, g in zip(params, torch.autograd.grad(loss, params)):
                p.sub_(0.5 * g)
    return model, theta_init, data


def _certify(model, theta_init, data, *, seed, **kw) -> dict:
    """certify_ticket on the bundle's train (bound set) and test splits, small defaults."""
    args = {"prior_sigmas": [0.1], "delta": 0.05, "delta_prime": 0.01, "mc_samples": 16, "steps": 15}
    args.update(kw)
    return certify_ticket(model, theta_init, data.train.x, data.train.y, seed=seed,
                          test=(data.test.x, data.test.y), **args)


def _state(model):
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    eff = {n: m.weight.detach().clone() for n, m in masked_layers(model)}
    return sd, eff


def test_metrics_restore_model_and_modes(ticket):
    model, theta_init, data = ticket
    model.train()
    model.fc.eval()  # a mixed mode must come back as it was
    sd, eff = _state(model)
    grads = [p.grad for p in model.parameters()]
    out = _certify(model, theta_init, data, seed=3)
    sd2, eff2 = _state(model)
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert all(torch.equal(eff[k], eff2[k]) for k in eff)  # the prune hook's `weight` attribute too
    assert model.training and model.fc_layers[0].training and not model.fc.training
    assert all(a is b for a, b in zip(grads, (p.grad for p in model.parameters())))
    for p in PREFIXES.values():
        for key in ("bound", "risk", "emp_risk_mc", "kl", "kl_term", "m", "n", "delta", "delta_prime",
                    "sigma_q_mean", "grid_size", "prior_sigma"):
            assert math.isfinite(out[f"{p}_{key}"]), f"{p}_{key}"
        assert out[f"{p}_n"] == N_TRAIN and out[f"{p}_m"] == 16
    model.eval()


def test_metrics_deterministic_in_seed(ticket):
    model, theta_init, data = ticket
    a = _certify(model, theta_init, data, seed=7, steps=5)
    b = _certify(model, theta_init, data, seed=7, steps=5)
    a.pop("bound_time_s"), b.pop("bound_time_s")
    assert a == b


def _capture_weights(model):
    seen, handles = {}, []
    for name, module in masked_layers(model):
        seen[name] = []

        def hook(mod, inp, out, name=name):
            seen[name].append(mod.weight.detach().clone())

        handles.append(module.register_forward_hook(hook))
    return seen, handles


def test_spike_and_slab_never_perturbs_pruned_weights(ticket):
    model, theta_init, data = ticket
    model.eval()
    seen, handles = _capture_weights(model)
    try:
        r = bound_ticket(model, theta_init, data.train.x, data.train.y, formulation="spike_and_slab",
                         prior_sigma=0.1, mc_samples=8, steps=5, seed=0)
    finally:
        for h in handles:
            h.remove()
    assert r.sigma_q_mean > 0
    for name, module in masked_layers(model):
        mask = module.weight_mask.bool()
        assert not mask.all()
        mean = module.weight_orig.detach() * module.weight_mask
        moved = False
        for w in seen[name]:
            assert torch.all(w[~mask] == 0), "a pruned weight was perturbed"
            moved |= bool((w[mask] != mean[mask]).any())
        assert moved, "unpruned weights were never perturbed"


def test_gaussian_perturbs_pruned_weights(ticket):
    model, theta_init, data = ticket
    model.eval()
    seen, handles = _capture_weights(model)
    try:
        bound_ticket(model, theta_init, data.train.x, data.train.y, formulation="gaussian", prior_sigma=0.1,
                     mc_samples=4, steps=0, seed=0)
    finally:
        for h in handles:
            h.remove()
    for name, module in masked_layers(model):
        mask = module.weight_mask.bool()
        assert any(bool((w[~mask] != 0).any()) for w in seen[name])


def test_spike_and_slab_kl_matches_library(ticket):
    model, theta_init, data = ticket
    model.eval()
    r = bound_ticket(model, theta_init, data.train.x, data.train.y, formulation="spike_and_slab",
                     prior_sigma=0.2, mc_samples=8, steps=10, seed=1)
    sq = dict(zip(r.names, [s.double() for s in r.sigma_q]))
    lam = density(model)
    expected = 0.0
    for name, p, mask, _ in trainable_parameters(model):
        th, th0 = p.detach().double(), theta_init[name].double()
        if mask is None:  # never-pruned (biases): pure Gaussian slab, λ_p = 1
            expected += float(gaussian_kl(th, sq[name], th0, 0.2))
        else:
            expected += float(spike_and_slab_kl_from_mask(mask, th, th0, sq[name], 0.2, lam))
    assert r.certificate.kl == pytest.approx(expected, rel=1e-12)
    assert posterior_kl(model, theta_init, r.sigma_q, "spike_and_slab", 0.2) == pytest.approx(expected, rel=1e-12)
    # λ_p is the ticket's density (the eq. (5) target density), here 1/2
    assert lam == pytest.approx(0.5, abs=0.02)


def test_gaussian_kl_counts_pruned_prior_mass(ticket):
    model, theta_init, data = ticket
    model.eval()
    space = PosteriorSpace.from_model(model, theta_init)
    sigma_p = 0.3
    sq = [torch.full_like(t, 0.05, dtype=torch.float64) for t in space.mean]
    kl = float(space.kl("gaussian", sq, sigma_p))
    params = {t.name: t.param.detach().double() for t in trainable_parameters(model)}
    masks = {t.name: (None if t.mask is None else t.mask.double()) for t in trainable_parameters(model)}
    lib = float(gaussian_kl_zero_mean_prior(params, dict(zip(space.names, sq)), sigma_p, masks))
    assert kl == pytest.approx(lib, rel=1e-12)
    # the pruned weights (mean 0, std σ_q) pay ½(r − 1 − log r), r = σ_q²/σ_p², each
    r = (0.05 / sigma_p) ** 2
    n_pruned = sum(int((m == 0).sum()) for m in masks.values() if m is not None)
    unpruned_only = sum(
        float(gaussian_kl(params[n][m != 0] if m is not None else params[n], 0.05, 0.0, sigma_p))
        for n, m in masks.items())
    assert n_pruned > 0
    assert kl == pytest.approx(unpruned_only + n_pruned * 0.5 * (r - 1 - math.log(r)), rel=1e-10)
    # and the certificate's KL is this KL at the optimised σ_q
    res = bound_ticket(model, theta_init, data.train.x, data.train.y, formulation="gaussian", prior_sigma=sigma_p,
                       mc_samples=8, steps=10, seed=2)
    lib = float(gaussian_kl_zero_mean_prior(params, dict(zip(res.names, [s.double() for s in res.sigma_q])),
                                            sigma_p, masks))
    assert res.certificate.kl == pytest.approx(lib, rel=1e-12)


def test_certificate_recomputed_from_reported_ingredients(ticket):
    model, theta_init, data = ticket
    out = _certify(model, theta_init, data, seed=5, prior_sigmas=[0.03, 0.3], steps=5)
    assert out["bound_num_prior_sigmas"] == 2
    for p in PREFIXES.values():
        J = int(out[f"{p}_grid_size"])
        assert J == 2 and out[f"{p}_delta_eff"] == pytest.approx(0.05 / 2)
        cert = certify(out[f"{p}_emp_risk_mc"], int(out[f"{p}_m"]), out[f"{p}_kl"], int(out[f"{p}_n"]),
                       delta=out[f"{p}_delta"], delta_prime=out[f"{p}_delta_prime"], form="kl", grid_size=J)
        assert cert.bound == out[f"{p}_bound"]
        assert cert.risk_upper == out[f"{p}_risk"] and cert.epsilon == out[f"{p}_kl_term"]
        # the explicit formulas: R_up = kl⁻¹(R̂_m, log(2J/δ′)/m), bound = kl⁻¹(R_up, (KL + log(2√n J/δ))/n)
        m, n = out[f"{p}_m"], out[f"{p}_n"]
        r_up = kl_inverse_upper(out[f"{p}_emp_risk_mc"], math.log(2 * J / 0.01) / m)
        eps = (out[f"{p}_kl"] + math.log(2 * math.sqrt(n) * J / 0.05)) / n
        assert r_up == pytest.approx(out[f"{p}_risk"], rel=1e-9)
        assert kl_inverse_upper(r_up, eps) == pytest.approx(out[f"{p}_bound"], rel=1e-9)
        # bound ≥ risk term ≥ R̂_m, and the reported σ_p is the best of the three
        assert out[f"{p}_bound"] >= out[f"{p}_risk"] >= out[f"{p}_emp_risk_mc"]
        per = [out[f"{p}_sp{j}_bound"] for j in range(J)]
        assert out[f"{p}_bound"] == min(per)
        assert out[f"{p}_prior_sigma"] == [0.03, 0.3][int(out[f"{p}_prior_index"])]
        for j in range(J):
            c = certify(out[f"{p}_sp{j}_emp_risk_mc"], int(m), out[f"{p}_sp{j}_kl"], int(n), delta=0.05,
                        delta_prime=0.01, form="kl", grid_size=J)
            assert c.bound == out[f"{p}_sp{j}_bound"]


def test_rejects_missing_theta_init(ticket):
    model, theta_init, data = ticket
    bad = {k: v for k, v in theta_init.items() if not k.endswith("bias")}
    with pytest.raises(KeyError, match="theta_init"):
        _certify(model, bad, data, seed=0, steps=0)


# ------------------------------------------------------------------------------ BatchNorm tickets


@pytest.fixture(scope="module")
def bn_ticket():
    """A 50%-sparse MLP with BatchNorm (8 → 12 → BN → 3) whose running statistics came from 'training' on S."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 12), torch.nn.BatchNorm1d(12),
                                torch.nn.ReLU(), torch.nn.Linear(12, 3))
    attach_masks(model)
    theta_init = {t.name: t.param.detach().clone() for t in trainable_parameters(model)}
    prune_step(model, 0.5, criterion="random", generator=torch.Generator().manual_seed(1))
    data = _bundle()
    model.train()
    with torch.no_grad():
        model(data.train.x)  # statistics of the bound set S, as training leaves them
    model.eval()
    return model, theta_init, data


def test_batchnorm_certificate_does_not_depend_on_the_bound_sets_statistics(bn_ticket):
    model, theta_init, data = bn_ticket
    with pytest.raises(ValueError, match="BatchNorm"):
        _certify(model, theta_init, data, seed=1, steps=0)
    bn = model[2]
    own = (bn.running_mean.clone(), bn.running_var.clone())
    first = _certify(model, theta_init, data, seed=1, steps=3, bn_data=data.val.x)
    assert torch.equal(bn.running_mean, own[0]) and torch.equal(bn.running_var, own[1])  # restored
    # statistics as if the bound set had been different: the certificate is the same, to the last bit
    with torch.no_grad():
        bn.running_mean.add_(torch.randn(12))
        bn.running_var.mul_(3.0)
    second = _certify(model, theta_init, data, seed=1, steps=3, bn_data=data.val.x)
    first.pop("bound_time_s"), second.pop("bound_time_s")
    assert first == second
    # ... while the data the statistics are recomputed on does matter (they are really recomputed)
    other = _certify(model, theta_init, data, seed=1, steps=3, bn_data=data.test.x)
    assert other["ss_emp_risk_mc"] != first["ss_emp_risk_mc"] or other["ss_bound"] != first["ss_bound"]
    with torch.no_grad():
        bn.running_mean.copy_(own[0])
        bn.running_var.copy_(own[1])
