"""A 1-D ResNet for MNIST-1D with OpenLTH's CIFAR-ResNet structure (``open_lth/models/cifar_resnet.py``), so
the large-learning-rate question of paper 000 (ResNet-20 on CIFAR-10) can be asked of a BatchNorm + residual
network on a laptop.

Stem Conv1d(k3, W) + BN, then 3 stages of ``blocks`` basic blocks with W / 2W / 4W channels (stride 2 at the
start of stages 2 and 3; a k1 conv + BN shortcut when the shape changes), global average pooling and ``fc``.
``depth = 6 · blocks + 2`` (8, 14, 20, ...). ``batchnorm=False`` drops every BN (the convolutions get biases);
``residual=False`` drops the shortcuts (a plain convolutional network of the same depth).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._init import openlth_init

DEFAULT_WIDTH, DEFAULT_DEPTH = 16, 8


class Block1d(nn.Module):
    def __init__(self, f_in: int, f_out: int, stride: int, batchnorm: bool, residual: bool):
        super().__init__()
        self.conv1 = nn.Conv1d(f_in, f_out, 3, stride=stride, padding=1, bias=not batchnorm)
        self.bn1 = nn.BatchNorm1d(f_out) if batchnorm else nn.Identity()
        self.conv2 = nn.Conv1d(f_out, f_out, 3, padding=1, bias=not batchnorm)
        self.bn2 = nn.BatchNorm1d(f_out) if batchnorm else nn.Identity()
        self.residual = residual
        self.shortcut: nn.Module = nn.Identity()
        if residual and (stride != 1 or f_in != f_out):
            self.shortcut = nn.Sequential(nn.Conv1d(f_in, f_out, 1, stride=stride, bias=not batchnorm),
                                          nn.BatchNorm1d(f_out) if batchnorm else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + self.shortcut(x)
        return torch.relu(out)


class ResNet1d(nn.Module):
    """Module names: ``conv``, ``bn``, ``blocks.{i}.conv1/conv2/shortcut.0``, ``fc`` (the classifier)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, width: int = DEFAULT_WIDTH,
                 depth: int = DEFAULT_DEPTH, batchnorm: bool = True, residual: bool = True):
        super().__init__()
        if len(input_shape) != 2:
            raise ValueError(f"resnet1d expects input_shape (C, L), got {tuple(input_shape)}")
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"resnet1d depth must be 6·blocks + 2 (8, 14, 20, ...), got {depth}")
        blocks = (depth - 2) // 6
        self.conv = nn.Conv1d(int(input_shape[0]), width, 3, padding=1, bias=not batchnorm)
        self.bn = nn.BatchNorm1d(width) if batchnorm else nn.Identity()
        layers, f_in = [], width
        for stage in range(3):
            f_out = width * 2**stage
            for b in range(blocks):
                layers.append(Block1d(f_in, f_out, 2 if stage > 0 and b == 0 else 1, batchnorm, residual))
                f_in = f_out
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(f_in, num_classes)
        openlth_init(self, batchnorm=batchnorm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(self.blocks(x).mean(-1))


def resnet1d(input_shape, num_classes, width=None, depth=None, batchnorm=None, residual=None) -> ResNet1d:
    return ResNet1d(input_shape, num_classes, DEFAULT_WIDTH if width is None else int(width),
                    DEFAULT_DEPTH if depth is None else int(depth), True if batchnorm is None else bool(batchnorm),
                    True if residual is None else bool(residual))
