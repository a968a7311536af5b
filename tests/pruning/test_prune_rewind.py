import pytest
import torch
from torch import nn

from lth_tune.models import build_model
from lth_tune.pruning import (
    attach_masks,
    effective_weights,
    mask_state,
    masks,
    prune_step,
    rewind,
    set_weights,
    snapshot,
)


def small_resnet(seed=0):
    torch.manual_seed(seed)
    return build_model("resnet20", input_shape=(3, 32, 32), num_classes=10, width=4)


def train_a_bit(model, steps=3):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("snapshot_before_masks", [False, True])
def test_rewind_restores_weights_and_bn_buffers_but_keeps_masks(snapshot_before_masks):
    model = small_resnet()
    if snapshot_before_masks:
        init = snapshot(model)
        attach_masks(model, ignore=["fc"])
    else:
        attach_masks(model, ignore=["fc"])
        init = snapshot(model)
        assert "conv.weight_orig" in init and not any(k.endswith("weight_mask") for k in init)
    train_a_bit(model)
    prune_step(model, 0.5)
    kept_masks = mask_state(model)
    assert not torch.equal(model.bn.running_mean, init["bn.running_mean"])

    rewind(model, init)
    assert all(torch.equal(m.bool(), kept_masks[n]) for n, m in masks(model).items())
    state = model.state_dict()
    for key, value in init.items():
        key = key.replace(".weight", ".weight_orig") if key + "_orig" in state else key
        assert torch.equal(state[key], value), key
    for name, w in effective_weights(model).items():
        init_w = init.get(f"{name}.weight", init.get(f"{name}.weight_orig"))
        assert torch.equal(w, init_w * masks(model)[name])
        assert torch.equal(dict(model.named_modules())[name].weight, w)  # refreshed without a forward


def test_snapshot_is_a_deep_copy():
    model = small_resnet()
    attach_masks(model)
    snap = snapshot(model)
    train_a_bit(model, steps=1)
    assert not torch.equal(snap["conv.weight_orig"], model.conv.weight_orig)


def test_rewind_to_iteration_k():
    model = small_resnet()
    attach_masks(model, ignore=["fc"])
    train_a_bit(model, steps=1)
    at_k = snapshot(model)  # Frankle et al. 2020: rewind to iteration k
    train_a_bit(model, steps=2)
    prune_step(model, 0.2)
    rewind(model, at_k)
    assert torch.equal(model.blocks[0].conv1.weight_orig, at_k["blocks.0.conv1.weight_orig"])


def test_set_weights_maps_names_and_validates():
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(1, 6), num_classes=3, widths=[5])
    attach_masks(model)
    prune_step(model, 0.5)
    mask_before = masks(model)["fc"].clone()
    new = torch.randn(3, 5)
    set_weights(model, {"fc.weight": new, "fc.bias": torch.zeros(3)})  # plain name -> weight_orig
    assert torch.equal(model.fc.weight_orig.detach(), new)
    assert torch.equal(model.fc.bias.detach(), torch.zeros(3))
    assert torch.equal(masks(model)["fc"], mask_before)
    assert torch.equal(model.fc.weight, new * mask_before)
    set_weights(model, {"fc.weight_orig": new * 2, "fc.weight_mask": torch.ones(3, 5)})  # masks skipped
    assert torch.equal(masks(model)["fc"], mask_before)
    with pytest.raises(ValueError, match="nope"):
        set_weights(model, {"nope.weight": new})
    with pytest.raises(ValueError, match="shape"):
        set_weights(model, {"fc.weight": torch.zeros(2, 2)})


def test_masked_snapshot_loads_into_unmasked_model():
    model = small_resnet(0)
    attach_masks(model)
    snap = snapshot(model)
    plain = small_resnet(1)
    set_weights(plain, snap)
    assert torch.equal(plain.conv.weight, model.conv.weight_orig)
