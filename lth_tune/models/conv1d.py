"""Small 1-D CNN for MNIST-1D (Greydanus 2020, ``mnist1d`` repo ``ConvBase``).

Three Conv1d layers (kernel 5/3/3, stride 2, padding 1, ``width`` channels, default 25) with ReLU,
then a linear classifier ``fc``. On (1, 40) inputs the flattened size is 25 x 5 = 125, exactly as in
ConvBase (5,210 parameters for 10 classes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._init import openlth_init

DEFAULT_CHANNELS = 25


def _out_len(length: int, kernel: int, stride: int, padding: int) -> int:
    return (length + 2 * padding - kernel) // stride + 1


class Conv1dNet(nn.Module):
    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: int = DEFAULT_CHANNELS):
        super().__init__()
        if len(input_shape) == 1:  # (L,) -> treated as (1, L)
            input_shape = (1, input_shape[0])
        if len(input_shape) != 2:
            raise ValueError(f"conv1d expects input_shape (C, L), got {tuple(input_shape)}")
        in_ch, length = int(input_shape[0]), int(input_shape[1])
        self.conv1 = nn.Conv1d(in_ch, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        for k in (5, 3, 3):
            length = _out_len(length, k, 2, 1)
        if length < 1:
            raise ValueError(f"conv1d: input length {input_shape[1]} is too short")
        self._in_ch = in_ch
        self.fc = nn.Linear(channels * length, num_classes)
        openlth_init(self, batchnorm=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # (N, L) -> (N, 1, L)
            x = x.unsqueeze(1)
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        return self.fc(x.flatten(1))


def conv1d(input_shape, num_classes, width=None) -> Conv1dNet:
    return Conv1dNet(input_shape, num_classes, DEFAULT_CHANNELS if width is None else int(width))
