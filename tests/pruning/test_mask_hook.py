"""MaskHook: torch.nn.utils.prune semantics with a leaner forward pre-hook (same bits, same gradients)."""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from lth_tune.data import Split, batches
from lth_tune.pruning import attach_masks, masked_layers, prune_step
from lth_tune.training import make_stepper

masks_module = sys.modules["lth_tune.pruning.masks"]


def model(torch_hook: bool) -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))
    if torch_hook:
        for layer in (m[0], m[2]):
            prune.identity(layer, "weight")
    else:
        attach_masks(m)
    g = torch.Generator()
    g.manual_seed(1)
    prune_step(m, 0.5, criterion="large_final", strategy="global", generator=g)
    return m


def test_mask_hook_keeps_prune_semantics_bit_for_bit():
    ours, ref = model(False), model(True)
    assert all(type(h) is masks_module.MaskHook for _, layer in masked_layers(ours)
               for h in layer._forward_pre_hooks.values())
    assert all(isinstance(h, prune.BasePruningMethod) for _, layer in masked_layers(ours)
               for h in layer._forward_pre_hooks.values())
    torch.manual_seed(2)
    data = Split(torch.randn(64, 12), torch.randint(0, 3, (64,)))
    for m in (ours, ref):
        # every forward through the pre-hook (train_epochs trains inside masked_in_place, which sets hooks aside)
        gen = torch.Generator()
        gen.manual_seed(3)
        stepper = make_stepper("sgd", m, lr=0.1, momentum=0.9, weight_decay=1e-3)
        for _ in range(3):
            for x, y in batches(data, 16, generator=gen):
                stepper.step(lambda m=m, x=x, y=y: F.cross_entropy(m(x), y))
    a, b = ours.state_dict(), ref.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for (_, lo), (_, lr) in zip(masked_layers(ours), masked_layers(ref)):
        assert torch.equal(lo.weight, lr.weight) and (lo.weight[lo.weight_mask == 0] == 0).all()


def test_pruned_weights_get_no_gradient_and_remove_still_works():
    m = model(False)
    loss = m(torch.randn(8, 12)).square().sum()
    loss.backward()
    for _, layer in masked_layers(m):
        assert (layer.weight_orig.grad[layer.weight_mask == 0] == 0).all()
        assert layer.weight_orig.grad[layer.weight_mask == 1].abs().sum() > 0
    layer = m[0]
    kept = (layer.weight_orig * layer.weight_mask).detach().clone()
    prune.remove(layer, "weight")
    assert isinstance(layer.weight, nn.Parameter) and torch.equal(layer.weight.detach(), kept)
    assert not layer._forward_pre_hooks
