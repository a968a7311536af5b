import numpy as np
import pytest
import torch
from torch import nn

from lth_tune.flatness import (
    exact_hessian,
    exact_trace_and_top_eig,
    expected_sharpness,
    loss_landscape_1d,
    parameters_to_perturb,
    save_landscape,
)
from lth_tune.flatness._util import flatten

from .nets import classification_data, linear_regression, pruned_mlp


def _snapshot(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def _assert_bit_equal(m, snap):
    for k, v in m.state_dict().items():
        assert torch.equal(v, snap[k]), k


def test_landscape_alpha0_is_loss_and_weights_restored_bit_exactly():
    m = pruned_mlp(bn=True)
    m.train()
    x, y = classification_data()
    ce = nn.CrossEntropyLoss()
    _, _, evecs = exact_trace_and_top_eig(m, ce, x, y)
    snap = _snapshot(m)
    alphas = [-0.5, 0.0, 0.25, 0.5]
    losses = loss_landscape_1d(m, ce, (x, y), evecs[0], alphas)
    _assert_bit_equal(m, snap)
    assert m.training
    m.eval()
    with torch.no_grad():
        base = float(ce(m(x), y))
    m.train()
    assert losses[1] == pytest.approx(base, rel=1e-6)
    assert losses.shape == (4,) and losses.dtype == np.float64
    assert not np.allclose(losses[0], losses[1])


def test_landscape_ignores_pruned_components_and_normalises():
    m = pruned_mlp()
    x, y = classification_data()
    ce = nn.CrossEntropyLoss()
    space = parameters_to_perturb(m)
    g = torch.Generator().manual_seed(0)
    d = [torch.randn(p.shape, generator=g) for p in space.params]
    d_masked = [t * mk * 7.0 for t, mk in zip(d, space.masks)]  # same unpruned direction, other scale
    a = loss_landscape_1d(m, ce, (x, y), d, [0.3, 1.0])
    b = loss_landscape_1d(m, ce, (x, y), d_masked, [0.3, 1.0])
    assert np.allclose(a, b, rtol=1e-6)


def test_landscape_quadratic_along_top_eigenvector():
    m, x, y = linear_regression()
    mse = nn.MSELoss()
    H = exact_hessian(m, mse, x, y)
    _, evals, evecs = exact_trace_and_top_eig(m, mse, x, y)
    m.zero_grad()
    mse(m(x), y).backward()
    gd = float(flatten([p.grad for p in parameters_to_perturb(m).params]).double() @ flatten(evecs[0]).double())
    m.zero_grad(set_to_none=True)
    alphas = np.linspace(-1, 1, 5)
    losses = loss_landscape_1d(m, mse, (x, y), evecs[0], alphas)
    expected = losses[2] + alphas * gd + 0.5 * alphas**2 * evals[0]
    assert np.allclose(losses, expected, rtol=1e-5, atol=1e-6)
    assert evals[0] == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]))


def test_save_landscape_writes_csv_and_png(tmp_path):
    csv_path, png_path = save_landscape(tmp_path / "sub" / "ls", [-1.0, 0.0, 1.0], [2.0, 1.0, 2.5], "t")
    rows = csv_path.read_text().strip().splitlines()
    assert rows[0] == "alpha,loss" and len(rows) == 4
    assert [float(v) for v in rows[3].split(",")] == [1.0, 2.5]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("per_param_sigma", [False, True])
def test_expected_sharpness_quadratic_closed_form(per_param_sigma):
    m, x, y = linear_regression(d=10, n=60, out=2)
    mse = nn.MSELoss()
    H = exact_hessian(m, mse, x, y)
    space = parameters_to_perturb(m)
    mask = flatten(space.masks).double()
    if per_param_sigma:
        g = torch.Generator().manual_seed(3)
        sigma = [0.05 + 0.1 * torch.rand(p.shape, generator=g) for p in space.params]
        s2 = flatten(sigma).double() ** 2
    else:
        sigma = 0.1
        s2 = torch.full_like(mask, 0.01)
    closed = 0.5 * float((s2 * mask * torch.diagonal(H)).sum())  # ½ Σ σ_i² H_ii on unpruned weights
    snap = _snapshot(m)
    seen_pruned = []
    pruned = m.weight_mask == 0
    hook = m.register_forward_pre_hook(lambda mod, inp: seen_pruned.append(mod.weight_orig[pruned].clone()))
    r = expected_sharpness(m, mse, (x, y), sigma, n_samples=400, generator=torch.Generator().manual_seed(0))
    hook.remove()
    _assert_bit_equal(m, snap)
    assert abs(r.value - closed) < 4 * r.se + 1e-6, (r.value, closed, r.se)
    assert r.value == pytest.approx(closed, rel=0.1)
    assert r.n_evals == 800 and r.n_samples == 400
    # noise never reached the pruned weights
    assert len(seen_pruned) == 801
    assert all(torch.equal(t, snap["weight_orig"][pruned]) for t in seen_pruned)


def test_expected_sharpness_reproducible_mode_restored_plain_mc():
    m = pruned_mlp(bn=True)
    m.train()
    x, y = classification_data()
    ce = nn.CrossEntropyLoss()
    kw = {"n_samples": 8, "antithetic": False}
    a = expected_sharpness(m, ce, (x, y), 0.05, generator=torch.Generator().manual_seed(1), **kw)
    b = expected_sharpness(m, ce, (x, y), 0.05, generator=torch.Generator().manual_seed(1), **kw)
    assert a.value == b.value and a.se > 0 and a.n_evals == 8
    assert m.training and all(mod.training for mod in m)
    m.eval()
    with torch.no_grad():
        assert a.base_loss == pytest.approx(float(ce(m(x), y)), rel=1e-6)
