import torch
from torch import nn
from torch.nn.utils import prune

from lth_tune.training import Regularizer, l2_init, l2_norm


def masked_linear():
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    prune.custom_from_mask(layer, "weight", torch.tensor([[1, 0, 1, 0]] * 3, dtype=torch.float32))
    return layer


def test_l2_init_counts_only_unpruned_weights():
    layer = masked_linear()
    init = {n: p.detach().clone() for n, p in layer.named_parameters()}
    with torch.no_grad():
        layer.weight_orig.add_(1.0)  # every weight moves by 1, pruned ones too
        layer.bias.add_(2.0)
    # 6 unpruned weights moved by 1, 3 biases by 2; the 6 pruned weights do not count
    assert l2_init(layer, init).item() == torch.tensor(6 * 1.0 + 3 * 4.0).item()


def test_l2_norm_matches_masked_norm():
    layer = masked_linear()
    expected = (layer.weight_orig * layer.weight_mask).pow(2).sum() + layer.bias.pow(2).sum()
    torch.testing.assert_close(l2_norm(layer), expected)


def test_regularizer_gradient_is_zero_on_pruned_weights():
    layer = masked_linear()
    init = {n: p.detach().clone() - 0.5 for n, p in layer.named_parameters()}
    reg = Regularizer("l2_init", 0.1, init)
    reg(layer).backward()
    g = layer.weight_orig.grad
    assert torch.all(g[layer.weight_mask == 0] == 0)
    # d/dθ λ‖θ−θ0‖² = 2λ(θ−θ0) = 2·0.1·0.5 on unpruned weights
    torch.testing.assert_close(g[layer.weight_mask == 1], torch.full((6,), 0.1))


def test_inactive_regularizer_is_zero():
    assert Regularizer("none", 1.0)(nn.Linear(2, 2)) == 0.0
    assert Regularizer("l2_norm", 0.0)(nn.Linear(2, 2)) == 0.0
