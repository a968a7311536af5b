"""Weight-noise robustness (paper 004 Fig. 2 right) against a direct re-computation with the same noise."""

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from lth_tune.flatness import weight_noise_robustness


def data(n=400, d=6, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, k, generator=g)
    return x, (x @ w).argmax(1)


def fitted_linear(x, y, steps=300):
    torch.manual_seed(0)
    model = nn.Linear(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def reference(weight, bias, mask, x, y, variances, draws, seed):
    """The same draws by hand, in ``named_parameters`` order (``bias``, then the pruned layer's ``weight_orig``):
    noise on the bias, and on the weight times its mask."""
    g = torch.Generator().manual_seed(seed)
    acc = lambda w, b: int(((x @ w.T + b).argmax(1) == y).sum()) / len(y)
    clean = acc(weight * mask, bias)
    out = []
    for var in variances:
        drops = []
        for _ in range(draws):
            zb = torch.randn(bias.shape, generator=g)
            zw = torch.randn(weight.shape, generator=g)
            w = (weight + math.sqrt(var) * zw * mask) * mask
            b = bias + math.sqrt(var) * zb
            drops.append((clean - acc(w, b)) / clean)
        out.append(sum(drops) / draws)
    return clean, out


def test_matches_a_direct_computation_and_keeps_pruned_weights_zero():
    x, y = data()
    model = fitted_linear(x, y)
    prune.l1_unstructured(model, "weight", amount=0.5)
    weight, mask, bias = model.weight_orig.detach().clone(), model.weight_mask.clone(), model.bias.detach().clone()
    variances, draws = [1e-3, 0.05, 1.0], 4
    clean, drops = weight_noise_robustness(model, (x, y), variances, draws=draws,
                                           generator=torch.Generator().manual_seed(7))
    ref_clean, ref_drops = reference(weight, bias, mask, x, y, variances, draws, seed=7)
    assert clean == pytest.approx(ref_clean)
    assert [d.drop for d in drops] == pytest.approx(ref_drops, abs=1e-12)
    assert [d.variance for d in drops] == variances
    assert drops[-1].drop > 0.1 > drops[0].drop  # larger noise, larger drop
    # parameters restored exactly, pruned weights still zero
    assert torch.equal(model.weight_orig, weight) and torch.equal(model.bias, bias)
    assert torch.all(model.weight[mask == 0] == 0)


def test_zero_variance_drops_nothing_and_bad_input_is_refused():
    x, y = data()
    model = fitted_linear(x, y, steps=50)
    clean, drops = weight_noise_robustness(model, (x, y), [0.0], draws=2)
    assert drops[0].drop == 0.0 and drops[0].accuracy == clean
    with pytest.raises(ValueError, match="draws"):
        weight_noise_robustness(model, (x, y), [0.1], draws=0)
    with pytest.raises(ValueError, match="variances"):
        weight_noise_robustness(model, (x, y), [-1.0])
