"""CIFAR VGG-16 with OpenLTH's structure (``open_lth/models/cifar_vgg.py``; Simonyan & Zisserman 2015).

Plan [64,64,M,128,128,M,256,256,256,M,512,512,512,M,512,512,512]: each number is conv3x3 (pad 1, with
bias) + BN + ReLU, M = maxpool 2; then avgpool 2 and ``fc`` (512 -> classes). On 3x32x32 inputs with
10 classes: 14,728,266 parameters (14,774,436 with 100 classes; BN affine parameters included).
Used by paper 000 (Sakamoto & Sato).
``width`` (default 64) scales every channel count by ``width / 64`` for quick CPU tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._init import openlth_init

DEFAULT_WIDTH = 64
VGG16_PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class ConvModule(nn.Module):
    """OpenLTH ``cifar_vgg.Model.ConvModule``: conv3x3 + BN + ReLU."""

    def __init__(self, in_filters: int, out_filters: int):
        super().__init__()
        self.conv = nn.Conv2d(in_filters, out_filters, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(out_filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class CifarVGG(nn.Module):
    """Module names: ``layers.{i}.conv`` (i indexes the plan, maxpools included) and ``fc``."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        width: int = DEFAULT_WIDTH,
        plan: Sequence = VGG16_PLAN,
    ):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"vgg expects input_shape (C, H, W), got {tuple(input_shape)}")
        filters, h, w = (int(s) for s in input_shape)
        layers: list[nn.Module] = []
        for spec in plan:
            if spec == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                h, w = h // 2, w // 2
            else:
                out = max(1, round(spec * width / DEFAULT_WIDTH))
                layers.append(ConvModule(filters, out))
                filters = out
        h, w = h // 2, w // 2  # final avgpool 2
        if h < 1 or w < 1:
            raise ValueError(f"vgg: input {tuple(input_shape)} is too small (needs H, W >= 32)")
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(filters * h * w, num_classes)
        openlth_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(x)
        x = F.avg_pool2d(x, 2)
        return self.fc(x.flatten(1))


def vgg16(input_shape, num_classes, width=None) -> CifarVGG:
    return CifarVGG(input_shape, num_classes, DEFAULT_WIDTH if width is None else int(width))
