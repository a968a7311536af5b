import warnings

import pytest
import torch
from torch import nn

from lth_tune.flatness import (
    NotPiecewiseLinearError,
    check_piecewise_linear,
    exact_hessian,
    exact_trace_and_top_eig,
    fast_trace_eigen,
    ggn_diagonal,
    ggn_trace,
    lanczos_top_eig,
    parameters_to_perturb,
)
from lth_tune.flatness._util import flatten

from .nets import classification_data, conv2d_net, conv_net, linear_regression, pruned_mlp

BACKENDS = ["layerwise", "functorch"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bn", [False, True])
def test_ggn_diagonal_equals_exact_hessian_diagonal_float64(bn, backend):
    m = pruned_mlp(bn=bn, dtype=torch.float64)
    m.train()  # measured in eval mode regardless (BN uses running statistics)
    x, y = classification_data(dtype=torch.float64)
    ce = nn.CrossEntropyLoss()
    H = exact_hessian(m, ce, x, y)
    diag = flatten(ggn_diagonal(m, ce, (x, y), backend=backend, chunk_size=7))
    assert torch.allclose(diag, torch.diagonal(H), rtol=1e-9, atol=1e-13)
    tr = ggn_trace(m, ce, (x, y), backend=backend)
    assert tr.trace == pytest.approx(float(torch.trace(H)), rel=1e-6)
    assert tr.trace_se == 0.0
    assert m.training


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make,shape", [(conv_net, (40, 2, 12)), (conv2d_net, (30, 1, 6, 6))])
def test_ggn_trace_exact_for_conv_bn_pool(make, shape, backend):
    m = make().double()
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (shape[0],), generator=torch.Generator().manual_seed(1))
    ce = nn.CrossEntropyLoss()
    H = exact_hessian(m, ce, x, y)
    diag = flatten(ggn_diagonal(m, ce, (x, y), backend=backend))
    assert torch.allclose(diag, torch.diagonal(H), rtol=1e-9, atol=1e-13)


def test_ggn_layerwise_chunking_and_nd_linear():
    ce = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(0)
    m = conv_net().double()
    x = torch.randn(40, 2, 12, dtype=torch.float64, generator=g)
    y = torch.randint(0, 3, (40,), generator=g)
    full = flatten(ggn_diagonal(m, ce, (x, y)))
    tiny_budget = flatten(ggn_diagonal(m, ce, (x, y), memory_budget=20_000))  # forces re-chunking
    assert torch.allclose(full, tiny_budget, rtol=1e-12, atol=1e-15)
    # Linear on 3-D inputs (per-position weights shared over the sequence axis)
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Flatten(), nn.Linear(18, 3)).double()
    xs = torch.randn(30, 3, 5, dtype=torch.float64, generator=g)
    ys = torch.randint(0, 3, (30,), generator=g)
    H = exact_hessian(seq, ce, xs, ys)
    for backend in BACKENDS:
        assert torch.allclose(flatten(ggn_diagonal(seq, ce, (xs, ys), backend=backend)), torch.diagonal(H),
                              rtol=1e-9, atol=1e-13)


def test_ggn_trace_float32_and_batches():
    m = pruned_mlp(bn=True)
    x, y = classification_data()
    ce = nn.CrossEntropyLoss()
    exact, _, _ = exact_trace_and_top_eig(m, ce, x, y)
    one = ggn_trace(m, ce, (x, y)).trace
    many = ggn_trace(m, ce, [(x[:10], y[:10]), (x[10:], y[10:])]).trace
    assert one == pytest.approx(exact, rel=1e-5)
    assert many == pytest.approx(exact, rel=1e-5)
    # pruned positions of the diagonal are exactly zero
    space = parameters_to_perturb(m)
    d = ggn_diagonal(m, ce, (x, y))
    assert all(float(t[mk == 0].abs().sum()) == 0 for t, mk in zip(d, space.masks))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_ggn_other_losses(loss, reduction):
    m = pruned_mlp(dtype=torch.float64)
    x, _ = classification_data(dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    if loss == "mse":
        crit, y = nn.MSELoss(reduction=reduction), torch.randn(len(x), 4, generator=g, dtype=torch.float64)
    else:
        crit = nn.BCEWithLogitsLoss(reduction=reduction)
        y = torch.rand(len(x), 4, generator=g, dtype=torch.float64)
    H = exact_hessian(m, crit, x, y)
    assert ggn_trace(m, crit, (x, y)).trace == pytest.approx(float(torch.trace(H)), rel=1e-9)


def test_check_rejects_smooth_and_shared_and_warns_unknown():
    with pytest.raises(NotPiecewiseLinearError):
        check_piecewise_linear(pruned_mlp(act=nn.Tanh))
    with pytest.raises(NotPiecewiseLinearError):
        check_piecewise_linear(nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3), nn.Linear(3, 2)))
    lin = nn.Linear(3, 3)
    with pytest.raises(NotPiecewiseLinearError):
        check_piecewise_linear(nn.Sequential(lin, nn.ReLU(), lin))

    class Odd(nn.Module):
        def forward(self, x):
            return x

    with pytest.warns(UserWarning, match="cannot verify"):
        assert check_piecewise_linear(nn.Sequential(nn.Linear(3, 3), Odd()))
    with pytest.raises(NotImplementedError):
        ggn_trace(pruned_mlp(), nn.NLLLoss(), classification_data())
    with pytest.raises(NotPiecewiseLinearError):
        ggn_trace(pruned_mlp(act=nn.GELU), nn.CrossEntropyLoss(), classification_data())


def test_ggn_is_not_the_hessian_diagonal_for_smooth_activations():
    """Why the check exists: with tanh the residual term makes diag(H) != diag(GGN)."""
    m = pruned_mlp(act=nn.Tanh, dtype=torch.float64)
    x, y = classification_data(dtype=torch.float64)
    ce = nn.CrossEntropyLoss()
    H = exact_hessian(m, ce, x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr = ggn_trace(m, ce, (x, y), check=False).trace
    assert abs(tr - float(torch.trace(H))) > 1e-4 * abs(float(torch.trace(H)))


def test_lanczos_matches_exact_top_eigenpairs():
    m = pruned_mlp(bn=True)
    x, y = classification_data()
    ce = nn.CrossEntropyLoss()
    _, evals, evecs = exact_trace_and_top_eig(m, ce, x, y, top_n=3)
    r = lanczos_top_eig(m, ce, (x, y), top_n=3, tol=1e-4)
    assert r.top_eigenvalues == pytest.approx(evals, rel=1e-4)
    assert r.n_hvp < 100
    v = flatten(r.eigenvector).double()
    assert abs(float(v @ flatten(evecs[0]).double())) > 0.999
    space = parameters_to_perturb(m)
    assert v[flatten(space.masks) == 0].abs().max() == 0
    # several batches: same operator, same answer
    r2 = lanczos_top_eig(m, ce, (x, y), batch_size=20, tol=1e-4)
    assert r2.top_eig == pytest.approx(evals[0], rel=1e-4)


def test_lanczos_float64_high_accuracy_and_quadratic():
    m = pruned_mlp(dtype=torch.float64)
    x, y = classification_data(dtype=torch.float64)
    _, evals, _ = exact_trace_and_top_eig(m, nn.CrossEntropyLoss(), x, y)
    r = lanczos_top_eig(m, nn.CrossEntropyLoss(), (x, y), tol=1e-8)
    assert r.top_eig == pytest.approx(evals[0], rel=1e-10)
    lin, xr, yr = linear_regression()
    _, ev, _ = exact_trace_and_top_eig(lin, nn.MSELoss(), xr, yr)
    assert lanczos_top_eig(lin, nn.MSELoss(), (xr, yr), tol=1e-6).top_eig == pytest.approx(ev[0], rel=1e-5)


def test_fast_restores_mode_and_clears_grads():
    m = pruned_mlp(bn=True)
    m.train()
    for p in m.parameters():
        p.grad = torch.ones_like(p)
    x, y = classification_data()
    r = fast_trace_eigen(m, nn.CrossEntropyLoss(), (x, y), top_n=2)
    assert m.training and all(mod.training for mod in m)
    assert all(p.grad is None for p in m.parameters())
    assert r.trace > 0 and len(r.top_eigenvalues) == 2
    # the pruning reparametrisation is left as a normal forward leaves it
    assert torch.equal(m[2].weight, m[2].weight_orig * m[2].weight_mask)
    assert type(m[2].weight) is torch.Tensor
