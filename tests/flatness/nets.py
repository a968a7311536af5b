"""Tiny models and data for the flatness tests (built here; no dependency on other lth_tune modules)."""

import torch
from torch import nn
from torch.nn.utils import prune


def pruned_mlp(seed: int = 0, bn: bool = False, act=nn.ReLU, dtype=torch.float32) -> nn.Sequential:
    """ReLU MLP 5 -> 12 -> 12 -> 4 (280 params, +BN 24), layer 2 randomly 50% pruned, layer 0 custom mask."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layers = [nn.Linear(5, 12), act(), nn.Linear(12, 12)]
    if bn:
        layers.append(nn.BatchNorm1d(12))
    layers += [act(), nn.Linear(12, 4)]
    m = nn.Sequential(*layers)
    prune.random_unstructured(m[2], "weight", amount=0.5)
    mask0 = (torch.rand(12, 5, generator=g) > 0.3).float()
    prune.custom_from_mask(m[0], "weight", mask0)
    if bn:  # non-trivial running statistics and affine parameters
        with torch.no_grad():
            m.train()
            for _ in range(5):
                m(torch.randn(64, 5, generator=g) * 2 + 0.5)
            m[3].weight.uniform_(0.5, 1.5, generator=g)
            m[3].bias.uniform_(-0.5, 0.5, generator=g)
    return m.to(dtype)


def conv_net(seed: int = 0) -> nn.Sequential:
    """Conv1d + BN + ReLU + maxpool + Linear on (N, 2, 12) inputs, first conv 40% pruned."""
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(), nn.MaxPool1d(2),
                      nn.Conv1d(4, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
    prune.random_unstructured(m[0], "weight", amount=0.4)
    with torch.no_grad():
        m.train()
        for _ in range(3):
            m(torch.randn(32, 2, 12))
    return m


def conv2d_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.AvgPool2d(2),
                      nn.Flatten(), nn.Linear(3 * 3 * 3, 3))
    prune.random_unstructured(m[0], "weight", amount=0.3)
    with torch.no_grad():
        m.train()
        for _ in range(3):
            m(torch.randn(16, 1, 6, 6))
    return m


def classification_data(n: int = 64, d: int = 5, c: int = 4, seed: int = 1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.randint(0, c, (n,), generator=g)
    return x, y


def linear_regression(seed: int = 0, d: int = 8, n: int = 50, out: int = 1):
    """nn.Linear(d, out) with MSE (a quadratic loss in the parameters), half of the weights pruned."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    m = nn.Linear(d, out)
    prune.random_unstructured(m, "weight", amount=0.5)
    x = torch.randn(n, d, generator=g)
    y = torch.randn(n, out, generator=g)
    return m, x, y
