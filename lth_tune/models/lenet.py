"""LeNet-5 (LeCun et al. 1998), the Fashion-MNIST network of paper 004 (Hayou et al., App. "Image
classification"): conv 6@5x5 (pad 2) -> maxpool 2 -> conv 16@5x5 -> maxpool 2 -> fc 120 -> fc 84 -> fc.

ReLU activations (the modern variant). 61,706 parameters on 1x28x28 inputs with 10 classes.
LeNet-300-100 lives in :mod:`lth_tune.models.mlp`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._init import openlth_init
from .mlp import lenet_300_100  # noqa: F401  (re-export: the LeNet family)


class LeNet5(nn.Module):
    def __init__(self, input_shape: Sequence[int], num_classes: int):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"lenet5 expects input_shape (C, H, W), got {tuple(input_shape)}")
        c, h, w = (int(s) for s in input_shape)
        self.conv1 = nn.Conv2d(c, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        h, w = (h // 2 - 4) // 2, (w // 2 - 4) // 2
        if h < 1 or w < 1:
            raise ValueError(f"lenet5: input {tuple(input_shape)} is too small")
        self.fc1 = nn.Linear(16 * h * w, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc = nn.Linear(84, num_classes)
        openlth_init(self, batchnorm=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = F.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = x.flatten(1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc(x)


def lenet5(input_shape, num_classes) -> LeNet5:
    return LeNet5(input_shape, num_classes)
