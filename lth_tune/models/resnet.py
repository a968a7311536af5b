"""CIFAR ResNet-20 with OpenLTH's structure (``open_lth/models/cifar_resnet.py``; He et al. 2016).

3x3 conv (W) + BN, then 3 stages x 3 BasicBlocks with W / 2W / 4W channels (stride 2 at the start of
stages 2 and 3; 1x1 conv + BN shortcut when the shape changes), global average pool and ``fc``.
With W = 16 and 10 classes: 272,474 parameters (BN affine parameters included). Used by paper 000
(Sakamoto & Sato) and paper 004 (Hayou et al.) on CIFAR-10.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._init import openlth_init

DEFAULT_WIDTH = 16
BLOCKS_PER_STAGE = 3  # ResNet-20 = 2 + 6 * 3


class Block(nn.Module):
    """OpenLTH ``cifar_resnet.Model.Block`` (post-activation BasicBlock)."""

    def __init__(self, f_in: int, f_out: int, downsample: bool = False):
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(f_in, f_out, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(f_out)
        self.conv2 = nn.Conv2d(f_out, f_out, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        if downsample or f_in != f_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(f_in, f_out, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(f_out),
            )
        else:
            self.shortcut = nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    """Module names: ``conv``, ``bn``, ``blocks.{i}.conv1/conv2/shortcut.0``, ``fc`` (the classifier)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        width: int = DEFAULT_WIDTH,
        blocks_per_stage: int = BLOCKS_PER_STAGE,
    ):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"resnet expects input_shape (C, H, W), got {tuple(input_shape)}")
        plan = [(width, blocks_per_stage), (2 * width, blocks_per_stage), (4 * width, blocks_per_stage)]
        current = plan[0][0]
        self.conv = nn.Conv2d(int(input_shape[0]), current, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(current)
        blocks = []
        for stage, (filters, num_blocks) in enumerate(plan):
            for b in range(num_blocks):
                blocks.append(Block(current, filters, downsample=stage > 0 and b == 0))
                current = filters
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(plan[-1][0], num_classes)
        openlth_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.conv(x)))
        out = self.blocks(out)
        out = out.mean(dim=(2, 3))  # global average pool (OpenLTH: avg_pool2d over the full map)
        return self.fc(out)


def resnet20(input_shape, num_classes, width=None) -> CifarResNet:
    return CifarResNet(input_shape, num_classes, DEFAULT_WIDTH if width is None else int(width))
