import pytest
import torch
from torch import nn

from lth_tune.flatness import exact_trace_and_top_eig, parameters_to_perturb, pyhessian_trace_eigen
from lth_tune.flatness._util import flatten

from .nets import classification_data, pruned_mlp


@pytest.fixture(scope="module")
def setup():
    m = pruned_mlp()
    x, y = classification_data()
    tr, evals, evecs = exact_trace_and_top_eig(m, nn.CrossEntropyLoss(), x, y)
    return m, x, y, tr, evals, evecs


def test_trace_within_4_se_and_top_eig_within_1e_2(setup):
    m, x, y, tr, evals, evecs = setup
    r = pyhessian_trace_eigen(m, nn.CrossEntropyLoss(), (x, y), trace_iters=400, eig_iters=2000, tol=0.0,
                              eig_tol=1e-7, seed=3)
    assert r.n_probes == 400 and len(r.trace_samples) == 400
    assert r.n_hvp > 400  # probes + power iterations
    assert r.trace_se > 0
    assert abs(r.trace - tr) < 4 * r.trace_se, (r.trace, tr, r.trace_se)
    assert abs(r.top_eig - evals[0]) < 1e-2 * abs(evals[0])
    # eigenvector: unit norm, zero at pruned positions, aligned with the exact one
    space = parameters_to_perturb(m)
    v = flatten(r.eigenvector).double()
    assert abs(float(v.norm()) - 1) < 1e-5
    assert v[flatten(space.masks) == 0].abs().max() == 0
    assert abs(float(v @ flatten(evecs[0]).double())) > 0.99


def test_mode_restored_grads_cleared_rng_untouched(setup):
    m, x, y, *_ = setup
    m.train()
    m[1].eval()  # mixed modes must be restored module by module
    for p in m.parameters():
        p.grad = torch.ones_like(p)
    state = torch.get_rng_state()
    r = pyhessian_trace_eigen(m, nn.CrossEntropyLoss(), (x, y), trace_iters=5, eig_iters=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert m.training and m[0].training and not m[1].training
    assert all(p.grad is None for p in m.parameters())
    assert r.seconds > 0 and r.trace is not None and r.top_eig is not None


def test_dataloader_mode_matches_single_batch(setup):
    m, x, y, *_ = setup
    ce = nn.CrossEntropyLoss()
    one = pyhessian_trace_eigen(m, ce, (x, y), trace_iters=10, tol=0.0, compute_eigen=False, seed=1)
    many = pyhessian_trace_eigen(m, ce, [(x[:40], y[:40]), (x[40:], y[40:])], trace_iters=10, tol=0.0,
                                 compute_eigen=False, seed=1)
    split = pyhessian_trace_eigen(m, ce, (x, y), batch_size=16, trace_iters=10, tol=0.0,
                                  compute_eigen=False, seed=1)
    assert many.trace == pytest.approx(one.trace, rel=1e-5)
    assert one.n_hvp == many.n_hvp == split.n_hvp == 10
    assert split.trace == pytest.approx(one.trace, rel=1e-5)
    assert one.trace_samples == pytest.approx(many.trace_samples, rel=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model_cpu_data():
    m = pruned_mlp().cuda()
    x, y = classification_data()
    r = pyhessian_trace_eigen(m, nn.CrossEntropyLoss(), (x, y), trace_iters=20, eig_iters=20)
    assert r.eigenvector[0].is_cuda and r.trace > 0
