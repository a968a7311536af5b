import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from lth_tune.models import build_model, prunable_layers
from lth_tune.pruning import (
    apply_mask_to_weights,
    attach_masks,
    density,
    effective_weights,
    load_mask_state,
    mask_state,
    masks,
    prune_step,
)


def lenet(seed=0):
    torch.manual_seed(seed)
    return build_model("lenet5", input_shape=(1, 28, 28), num_classes=10)


def n_alive(model):
    return {n: int(m.sum()) for n, m in masks(model).items()}


def test_attach_masks_reparametrises_and_respects_ignore():
    model = lenet()
    before = {n: m.weight.detach().clone() for n, m in prunable_layers(model)}
    attach_masks(model, ignore=["fc"])
    assert set(masks(model)) == {"conv1", "conv2", "fc1", "fc2"}
    assert "weight_orig" not in model.fc._parameters and "weight" in model.fc._parameters
    for name, m in prunable_layers(model):
        if name != "fc":
            assert "weight_orig" in m._parameters and "weight_mask" in m._buffers
            assert "bias" in m._parameters  # biases are never masked
        torch.testing.assert_close(m.weight, before[name])
    assert not any(n.endswith("bias_mask") for n, _ in model.named_buffers())
    attach_masks(model, ignore=["fc"])  # idempotent: no stacked hooks
    assert all(len(m._forward_pre_hooks) == 1 for _, m in prunable_layers(model) if _ != "fc")


def test_ignore_accepts_openlth_spelling_and_rejects_unknown_names():
    model = lenet()
    attach_masks(model, ignore=("fc.weight",))
    assert "fc" not in masks(model)
    with pytest.raises(ValueError, match="nonexistent"):
        attach_masks(lenet(), ignore=["fc", "nonexistent"])


def test_prune_step_requires_masks_and_valid_arguments():
    model = lenet()
    with pytest.raises(ValueError, match="attach_masks"):
        prune_step(model, 0.2)
    attach_masks(model)
    with pytest.raises(ValueError, match="criterion"):
        prune_step(model, 0.2, criterion="magnitude")
    with pytest.raises(ValueError, match="strategy"):
        prune_step(model, 0.2, strategy="local")
    with pytest.raises(ValueError):
        prune_step(model, 1.5)


@pytest.mark.parametrize("criterion", ["large_final", "small_final", "random"])
@pytest.mark.parametrize("fraction", [0.2, 0.37])
def test_global_counts_follow_round_fraction_remaining(criterion, fraction):
    model = lenet()
    attach_masks(model, ignore=["fc"])
    total = sum(m.numel() for m in masks(model).values())
    remaining = total
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        prune_step(model, fraction, criterion=criterion, strategy="global", generator=gen)
        remaining -= round(fraction * remaining)
        assert sum(n_alive(model).values()) == remaining
        assert density(model) == pytest.approx(remaining / total)
    assert model.fc.weight.ne(0).all()  # ignored layer untouched
    # exactly one plain prune hook per layer (masks updated in place, no PruningContainer)
    for _, m in prunable_layers(model)[:-1]:
        hooks = list(m._forward_pre_hooks.values())
        assert len(hooks) == 1 and not isinstance(hooks[0], prune.PruningContainer)


@pytest.mark.parametrize("criterion", ["large_final", "small_final", "random"])
def test_layerwise_counts(criterion):
    model = lenet()
    attach_masks(model)
    remaining = {n: m.numel() for n, m in masks(model).items()}
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        prune_step(model, 0.3, criterion=criterion, strategy="layerwise", generator=gen)
        remaining = {n: r - round(0.3 * r) for n, r in remaining.items()}
        assert n_alive(model) == remaining


def _reference_removed(model, k, largest_removed):
    """Flat (layer, index) pairs of the k unpruned weights a sorted reference would remove."""
    entries = []
    for name, m in prunable_layers(model):
        if name in masks(model):
            w = m.weight_orig.detach().reshape(-1)
            alive = m.weight_mask.reshape(-1).bool()
            entries += [(abs(w[i].item()), name, i) for i in torch.nonzero(alive).reshape(-1).tolist()]
    entries.sort(key=lambda e: e[0], reverse=largest_removed)
    return {(name, i) for _, name, i in entries[:k]}


def _pruned_set(model):
    return {
        (n, i)
        for n, m in masks(model).items()
        for i in torch.nonzero(m.reshape(-1) == 0).reshape(-1).tolist()
    }


@pytest.mark.parametrize("criterion, largest_removed", [("large_final", False), ("small_final", True)])
def test_magnitude_criteria_match_sorted_reference(criterion, largest_removed):
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(1, 12), num_classes=3, widths=[10, 8])
    attach_masks(model, ignore=["fc"])
    pruned = set()
    for _ in range(3):
        remaining = sum(n_alive(model).values())
        k = round(0.25 * remaining)
        expected = pruned | _reference_removed(model, k, largest_removed)
        prune_step(model, 0.25, criterion=criterion)
        pruned = _pruned_set(model)
        assert pruned == expected
        # between steps the weights change (as training would); pruned weights must stay pruned
        with torch.no_grad():
            for m in masks(model):
                dict(model.named_modules())[m].weight_orig.normal_()


def test_large_final_keeps_largest_magnitudes_layerwise():
    layer = nn.Linear(5, 4)
    attach_masks(layer)
    prune_step(layer, 0.5, strategy="layerwise")
    w = layer.weight_orig.detach().abs()
    kept, removed = w[layer.weight_mask.bool()], w[~layer.weight_mask.bool()]
    assert kept.numel() == 10 and kept.min() >= removed.max()


def test_ties_are_broken_deterministically():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    with torch.no_grad():
        for m in model:
            m.weight.fill_(0.5)
    attach_masks(model)
    prune_step(model, 0.5)  # 18 weights, all tied: the first 9 in layer/row-major order go
    assert model[0].weight_mask.reshape(-1).tolist() == [0.0] * 9 + [1.0] * 3
    assert model[1].weight_mask.reshape(-1).tolist() == [1.0] * 6


def test_random_is_reproducible_by_seed():
    def run(seed):
        model = lenet(0)
        attach_masks(model, ignore=["fc"])
        gen = torch.Generator().manual_seed(seed)
        for _ in range(2):
            prune_step(model, 0.5, criterion="random", generator=gen)
        return mask_state(model)

    a, b, c = run(7), run(7), run(8)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)


def test_random_is_not_magnitude_based():
    model = lenet()
    attach_masks(model, ignore=["fc"])
    prune_step(model, 0.5, criterion="random", generator=torch.Generator().manual_seed(0))
    w = model.fc1.weight_orig.detach().abs()
    m = model.fc1.weight_mask.bool()
    assert w[~m].max() > w[m].min()  # a magnitude criterion would separate them


def test_fraction_zero_and_one():
    model = lenet()
    attach_masks(model, ignore=["fc"])
    prune_step(model, 0.0)
    assert density(model) == 1.0
    prune_step(model, 1.0)
    assert density(model) == 0.0


def test_density_values():
    model = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 5))  # 100 + 50 weights
    assert density(model) == 1.0
    attach_masks(model)
    assert density(model) == 1.0
    prune_step(model, 0.5, strategy="layerwise")
    assert density(model) == pytest.approx(75 / 150)
    other = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 5))
    attach_masks(other, ignore=["1"])
    prune_step(other, 0.2)
    assert density(other) == pytest.approx(80 / 100)  # over the masked layers only


def test_pruned_weights_get_zero_gradient():
    model = lenet()
    attach_masks(model, ignore=["fc"])
    prune_step(model, 0.6)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    for name, mask in masks(model).items():
        grad = dict(model.named_modules())[name].weight_orig.grad
        assert grad is not None
        assert torch.all(grad[mask == 0] == 0)
        assert grad[mask == 1].abs().sum() > 0


@pytest.mark.parametrize("zero_storage", [False, True])
def test_pruned_weights_stay_zero_under_sgd_momentum_weight_decay(zero_storage):
    torch.manual_seed(0)
    model = build_model("resnet20", input_shape=(3, 32, 32), num_classes=10, width=4)
    attach_masks(model, ignore=["fc"])
    prune_step(model, 0.7)
    if zero_storage:
        apply_mask_to_weights(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(3):
        opt.zero_grad()
        x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model(torch.randn(2, 3, 32, 32))  # forward recomputes weight = weight_orig * mask
    for name, w in effective_weights(model).items():
        mask = masks(model)[name]
        assert torch.all(w[mask == 0] == 0)
        assert torch.all(dict(model.named_modules())[name].weight[mask == 0] == 0)
        if zero_storage:  # zero weights with zero gradient: decay and momentum keep them at zero
            assert torch.all(dict(model.named_modules())[name].weight_orig[mask == 0] == 0)


def test_effective_weights_and_apply_mask():
    model = lenet()
    attach_masks(model, ignore=["fc"])
    prune_step(model, 0.5)
    eff = effective_weights(model)
    assert set(eff) == set(masks(model))
    assert set(effective_weights(model, include_unmasked=True)) == set(eff) | {"fc"}
    for name, w in eff.items():
        m = dict(model.named_modules())[name]
        torch.testing.assert_close(w, m.weight_orig * m.weight_mask)
        assert m.weight_orig[m.weight_mask == 0].abs().sum() > 0
    apply_mask_to_weights(model)
    for name in eff:
        m = dict(model.named_modules())[name]
        assert torch.all(m.weight_orig[m.weight_mask == 0] == 0)
        torch.testing.assert_close(m.weight_orig.detach(), eff[name])


def test_mask_state_round_trip(tmp_path):
    model = lenet(0)
    attach_masks(model, ignore=["fc"])
    prune_step(model, 0.4)
    prune_step(model, 0.4, strategy="layerwise")
    state = mask_state(model)
    assert all(t.dtype == torch.bool and t.device.type == "cpu" for t in state.values())
    torch.save(state, tmp_path / "masks.pt")
    loaded = torch.load(tmp_path / "masks.pt", weights_only=True)

    fresh = lenet(1)  # freshly built: masks are attached by load_mask_state
    load_mask_state(fresh, loaded)
    assert set(masks(fresh)) == set(masks(model)) and "fc" not in masks(fresh)
    for n, m in masks(fresh).items():
        assert torch.equal(m, masks(model)[n]) and m.dtype == torch.float32

    # a full masked checkpoint then loads into the fresh model
    torch.save(model.state_dict(), tmp_path / "model.pt")
    other = lenet(2)
    load_mask_state(other, mask_state(model))
    other.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(other(x), model(x))


def test_load_mask_state_accepts_state_dict_keys_and_validates():
    model = lenet()
    attach_masks(model, ignore=["fc"])
    prune_step(model, 0.3)
    sd_masks = {k: v for k, v in model.state_dict().items() if k.endswith("weight_mask")}
    fresh = lenet(1)
    load_mask_state(fresh, sd_masks)
    assert density(fresh) == pytest.approx(density(model))
    with pytest.raises(ValueError, match="bogus"):
        load_mask_state(lenet(), {"bogus": torch.ones(3)})
    with pytest.raises(ValueError, match="shape"):
        load_mask_state(lenet(), {"fc": torch.ones(3, 3, dtype=torch.bool)})
    full = lenet()
    attach_masks(full)  # fc masked, but the state has no fc mask
    with pytest.raises(ValueError, match="fc"):
        load_mask_state(full, mask_state(model))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("criterion", ["large_final", "small_final", "random"])
@pytest.mark.parametrize("strategy", ["global", "layerwise"])
def test_cuda_masks_match_cpu(criterion, strategy):
    cpu, gpu = lenet(0), lenet(0).cuda()
    for model in (cpu, gpu):
        attach_masks(model, ignore=["fc"])
        gen = torch.Generator().manual_seed(3)  # CPU generator also drives CUDA models
        for _ in range(3):
            prune_step(model, 0.3, criterion=criterion, strategy=strategy, generator=gen)
    assert all(torch.equal(mask_state(cpu)[n], mask_state(gpu)[n]) for n in mask_state(cpu))
    assert masks(gpu)["conv1"].device.type == "cuda"


def test_deepcopy_of_masked_models():
    import copy

    from lth_tune.pruning import copy_model

    model = lenet()
    attach_masks(model, ignore=["fc"])
    copy.deepcopy(model)  # right after attaching
    prune_step(model, 0.5)
    copy.deepcopy(model)  # right after pruning
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    loss = nn.functional.cross_entropy(model(x), y)
    clone = copy_model(model)  # after a training forward, before backward
    loss.backward()  # the original's graph is intact
    assert model.fc1.weight_orig.grad is not None
    assert all(torch.equal(masks(clone)[n], m) for n, m in masks(model).items())
    torch.testing.assert_close(clone(x), model(x))
    with torch.no_grad():
        clone.fc1.weight_orig.add_(1.0)
    assert not torch.equal(clone.fc1.weight_orig, model.fc1.weight_orig)
    nn.functional.cross_entropy(clone(x), y).backward()
    assert torch.all(clone.fc1.weight_orig.grad[clone.fc1.weight_mask == 0] == 0)


def test_lowest_k_matches_stable_sort_with_ties():
    from lth_tune.pruning.criteria import lowest_k

    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (200,), generator=g).float()  # many ties
    for k in (0, 1, 37, 100, 199, 200, 250):
        expected = torch.sort(scores, stable=True).indices[:k]
        assert sorted(lowest_k(scores, k).tolist()) == sorted(expected.tolist())
