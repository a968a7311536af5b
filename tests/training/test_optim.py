"""SAM and NVRM steps against hand computations on a tiny masked model; pruned weights stay zero."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from lth_tune.training import make_stepper

MASK = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])


def tiny():
    torch.manual_seed(1)
    net = nn.Linear(3, 2)
    prune.custom_from_mask(net, "weight", MASK)
    x = torch.randn(5, 3)
    y = torch.tensor([0, 1, 1, 0, 1])
    return net, x, y


def loss_at(w, b, x, y):
    return F.cross_entropy(x @ (w * MASK).T + b, y)


def grads(w, b, x, y):
    w = w.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True)
    loss_at(w, b, x, y).backward()
    return w.grad, b.grad


def step(stepper, net, x, y):
    return stepper.step(lambda: F.cross_entropy(net(x), y))


def test_sgd_step_matches_hand_computation():
    net, x, y = tiny()
    w0, b0 = net.weight_orig.detach().clone(), net.bias.detach().clone()
    step(make_stepper("sgd", net, lr=0.1), net, x, y)
    gw, gb = grads(w0, b0, x, y)
    torch.testing.assert_close(net.weight_orig.detach(), w0 - 0.1 * gw)
    torch.testing.assert_close(net.bias.detach(), b0 - 0.1 * gb)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_step_matches_hand_computation(adaptive):
    net, x, y = tiny()
    rho, lr = 0.2, 0.1
    w0, b0 = net.weight_orig.detach().clone(), net.bias.detach().clone()
    step(make_stepper("sam", net, lr=lr, rho=rho, adaptive=adaptive), net, x, y)
    gw, gb = grads(w0, b0, x, y)
    gw = gw * MASK  # ascent direction restricted to unpruned weights
    if adaptive:  # Kwon et al.: e = ρ T² g / ‖T g‖, T = |θ|
        tw, tb = gw * w0.abs(), gb * b0.abs()
        norm = torch.sqrt(tw.pow(2).sum() + tb.pow(2).sum())
        ew, eb = rho * w0.pow(2) * gw / norm, rho * b0.pow(2) * gb / norm
    else:
        norm = torch.sqrt(gw.pow(2).sum() + gb.pow(2).sum())
        ew, eb = rho * gw / norm, rho * gb / norm
    assert torch.all(ew[MASK == 0] == 0)
    g2w, g2b = grads(w0 + ew, b0 + eb, x, y)
    torch.testing.assert_close(net.weight_orig.detach(), w0 - lr * g2w)
    torch.testing.assert_close(net.bias.detach(), b0 - lr * g2b)


def test_nvrm_step_matches_hand_computation():
    net, x, y = tiny()
    b, lr = 0.05, 0.1
    w0, b0 = net.weight_orig.detach().clone(), net.bias.detach().clone()
    g = torch.Generator().manual_seed(7)
    step(make_stepper("nvrm", net, lr=lr, b=b, generator=g), net, x, y)
    ref = torch.Generator().manual_seed(7)
    noise = {n: torch.randn(p.shape, generator=ref) * b for n, p in net.named_parameters()}  # stepper's order
    nw, nb = noise["weight_orig"] * MASK, noise["bias"]
    gw, gb = grads(w0 + nw, b0 + nb, x, y)
    # the noise is removed before the update: θ ← θ − lr ∇L(θ + ε)
    torch.testing.assert_close(net.weight_orig.detach(), w0 - lr * gw)
    torch.testing.assert_close(net.bias.detach(), b0 - lr * gb)


@pytest.mark.parametrize("name", ["sgd", "sam", "nvrm"])
def test_pruned_weights_stay_exactly_zero(name):
    net, x, y = tiny()
    stepper = make_stepper(name, net, lr=0.5, momentum=0.9, weight_decay=1e-2, rho=0.5, b=0.1,
                           generator=torch.Generator().manual_seed(0))
    for _ in range(20):
        step(stepper, net, x, y)
    assert torch.all(net.weight[MASK == 0] == 0)
    assert torch.all(net.weight[MASK == 1] != 0)


def test_sam_updates_batchnorm_statistics_once_per_step():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    ref = nn.Sequential(*[m for m in __import__("copy").deepcopy(net)])
    step(make_stepper("sam", net, lr=0.1, rho=0.1), net, x, y)
    ref.train()
    ref(x)  # exactly one forward pass worth of running-statistics update
    torch.testing.assert_close(net[1].running_mean, ref[1].running_mean)
    torch.testing.assert_close(net[1].running_var, ref[1].running_var)
    assert net[1].num_batches_tracked.item() == 1


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="sgd, sam, nvrm"):
        make_stepper("adam", nn.Linear(2, 2), lr=0.1)


def test_linear_warmup_scales_the_first_steps_and_leaves_the_schedule():
    """Iteration t of the warm-up uses lr·t/k; afterwards (and for the milestone schedule) the lr is unchanged."""
    from lth_tune.data import Split
    from lth_tune.training import train_epochs

    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    stepper = make_stepper("sgd", model, lr=0.1)
    seen = []
    real = stepper.step

    def spy(closure):
        seen.append(stepper.optimizer.param_groups[0]["lr"])
        return real(closure)

    stepper.step = spy
    split = Split(torch.randn(40, 3), torch.randint(0, 2, (40,)))
    train_epochs(model, split, stepper, epochs=2, batch_size=10, milestones=[1], gamma=0.5, warmup_iterations=4)
    assert seen == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.05, 0.05, 0.05, 0.05])
