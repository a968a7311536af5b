"""masked_in_place: pruned weights stored as zeros + masked gradients train exactly like torch's reparametrisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from lth_tune.data import Split, batches
from lth_tune.pruning import attach_masks, masked_in_place, masked_layers, prune_step
from lth_tune.training import Regularizer, make_stepper, train_epochs


def ticket() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    attach_masks(m)
    g = torch.Generator()
    g.manual_seed(1)
    prune_step(m, 0.6, criterion="large_final", strategy="global", generator=g)
    return m


def reference_training(m: nn.Module, data: Split, stepper, regularizer, epochs: int, seed: int) -> None:
    """The same steps as train_epochs, but every forward through torch's ``weight_orig * weight_mask``."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    m.train()
    for _ in range(epochs):
        for x, y in batches(data, 16, generator=gen, shuffle=True):
            stepper.step(lambda x=x, y=y: F.cross_entropy(m(x), y) + regularizer(m))


@pytest.mark.parametrize("optimizer,device", [
    ("sgd", "cpu"), ("sam", "cpu"), ("nvrm", "cpu"),
    pytest.param("sgd", "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
])
def test_training_in_place_equals_the_reparametrisation_bit_for_bit(optimizer, device):
    torch.manual_seed(2)
    data = Split(torch.randn(96, 12, device=device), torch.randint(0, 3, (96,), device=device))
    models = ticket().to(device), ticket().to(device)
    theta_init = {k: v.detach().clone() for k, v in models[0].named_parameters()}
    for i, m in enumerate(models):
        nvrm = torch.Generator()
        nvrm.manual_seed(4)
        stepper = make_stepper(optimizer, m, lr=0.1, momentum=0.9, weight_decay=1e-3, rho=0.05, b=0.01,
                               generator=nvrm)
        reg = Regularizer("l2_init", 1e-2, theta_init)
        if i == 0:
            gen = torch.Generator()
            gen.manual_seed(3)
            train_epochs(m, data, stepper, epochs=3, batch_size=16, generator=gen, regularizer=reg)
        else:
            reference_training(m, data, stepper, reg, epochs=3, seed=3)
    ours, ref = models
    start = ticket().to(device)
    for (name, lo), (_, lr) in zip(masked_layers(ours), masked_layers(ref)):
        kept = lo.weight_mask.bool()
        # the effective weights, bit for bit (the reference's ``weight`` attribute is its last forward's, pre-step)
        assert torch.equal(lo.weight, lr.weight_orig * lr.weight_mask), name
        assert torch.equal(lo.weight_orig[kept], lr.weight_orig[kept]), name
        assert (lo.weight_orig[~kept] == 0).all() and (lo.weight[~kept] == 0).all()  # pruned: stored as zeros
        assert (lr.weight_orig[~kept] != 0).any()  # (the reparametrisation keeps their old values there)
        assert torch.equal(lo.bias, lr.bias)
        assert not torch.equal(lo.weight_orig[kept], start.get_submodule(name).weight_orig[kept])  # it trained


def test_inside_the_block_pruned_weights_are_zero_and_get_no_gradient():
    m = ticket()
    with masked_in_place(m):
        for _, layer in masked_layers(m):
            assert layer.weight is layer.weight_orig and not layer._forward_pre_hooks
            assert (layer.weight_orig[layer.weight_mask == 0] == 0).all()
        m(torch.randn(8, 12)).square().sum().backward()
        m(torch.randn(8, 12)).square().sum().backward()  # accumulated gradients are masked too
        for _, layer in masked_layers(m):
            assert (layer.weight_orig.grad[layer.weight_mask == 0] == 0).all()
            assert layer.weight_orig.grad[layer.weight_mask == 1].abs().sum() > 0
        with masked_in_place(m):  # nested: the inner block leaves the outer one's state alone
            pass
        assert all(layer.weight is layer.weight_orig for _, layer in masked_layers(m))


def test_the_reparametrisation_is_back_after_the_block_even_after_an_error():
    m = ticket()
    with pytest.raises(RuntimeError, match="diverged"), masked_in_place(m):
        raise RuntimeError("diverged")
    for _, layer in masked_layers(m):
        hooks = list(layer._forward_pre_hooks.values())
        assert len(hooks) == 1 and isinstance(hooks[0], prune.BasePruningMethod)
        assert not isinstance(layer.weight, nn.Parameter)
        assert torch.equal(layer.weight, layer.weight_orig * layer.weight_mask)
        layer.weight_orig.grad = None
    m(torch.randn(8, 12)).square().sum().backward()  # no gradient hook left: the product masks the gradient
    for _, layer in masked_layers(m):
        assert (layer.weight_orig.grad[layer.weight_mask == 0] == 0).all()
        assert not layer.weight_orig._post_accumulate_grad_hooks


def test_conv_net_channels_last_bf16_equals_the_reparametrisation():
    """The ResNet path: 4-D masks in channels-last layout, forward/backward under bfloat16 autocast."""
    def conv_ticket() -> nn.Module:
        torch.manual_seed(0)
        m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 3))
        attach_masks(m, ignore=["5"])
        g = torch.Generator()
        g.manual_seed(1)
        prune_step(m, 0.5, criterion="large_final", strategy="global", generator=g)
        return m.to(memory_format=torch.channels_last)

    torch.manual_seed(2)
    data = Split(torch.randn(48, 3, 6, 6), torch.randint(0, 3, (48,)))
    ours, ref = conv_ticket(), conv_ticket()
    gen = torch.Generator()
    gen.manual_seed(3)
    train_epochs(ours, data, make_stepper("sgd", ours, lr=0.1, momentum=0.9, weight_decay=1e-3), epochs=2,
                 batch_size=16, generator=gen, autocast_dtype=torch.bfloat16, channels_last=True)
    stepper = make_stepper("sgd", ref, lr=0.1, momentum=0.9, weight_decay=1e-3)
    gen.manual_seed(3)
    ref.train()
    for _ in range(2):
        for x, y in batches(data, 16, generator=gen, shuffle=True):
            x = x.contiguous(memory_format=torch.channels_last)

            def closure(x=x, y=y):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return F.cross_entropy(ref(x), y)

            stepper.step(closure)
    for (name, lo), (_, lr) in zip(masked_layers(ours), masked_layers(ref)):
        assert torch.equal(lo.weight, lr.weight_orig * lr.weight_mask), name
        assert (lo.weight_orig[lo.weight_mask == 0] == 0).all()
    a, b = ours.state_dict(), ref.state_dict()
    for k in a:
        if not k.endswith(("weight_orig", "weight_mask")):
            assert torch.equal(a[k], b[k]), k  # biases, BatchNorm weights and running statistics
