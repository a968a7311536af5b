"""The raw form every dataset source returns before splitting, noise and normalisation."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RawData:
    """CPU tensors of one dataset as shipped: ``x`` is uint8 (images) or float32 (mnist1d),
    shaped ``(N, C, ...)``; ``y`` is int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
