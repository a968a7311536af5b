"""Fully connected networks: the generic ``mlp`` and LeNet-300-100.

Paper 004 (Hayou et al.) uses a 3x1000 MLP on MNIST (``widths=[1000, 1000, 1000]``); LeNet-300-100 is
the MNIST network of Frankle & Carbin (2019) / OpenLTH ``mnist_lenet_300_100``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ._init import openlth_init


class MLP(nn.Module):
    """flatten -> [Linear -> ReLU] per hidden width -> Linear (``fc``) to the classes.

    Hidden layers are ``fc_layers.0``, ``fc_layers.1``, ...; the classifier is ``fc`` (as in OpenLTH's
    ``mnist_lenet``), so studies can list ``"fc"`` in ``pruning.ignore``.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, widths: Sequence[int]):
        super().__init__()
        in_features = int(math.prod(input_shape))
        layers = []
        for w in widths:
            layers.append(nn.Linear(in_features, int(w)))
            in_features = int(w)
        self.fc_layers = nn.ModuleList(layers)
        self.fc = nn.Linear(in_features, num_classes)
        openlth_init(self, batchnorm=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.fc_layers:
            x = torch.relu(layer(x))
        return self.fc(x)


DEFAULT_WIDTHS = (100, 100)
LENET_300_100_WIDTHS = (300, 100)


def mlp(input_shape, num_classes, widths=None) -> MLP:
    return MLP(input_shape, num_classes, DEFAULT_WIDTHS if widths is None else widths)


def lenet_300_100(input_shape, num_classes) -> MLP:
    """LeNet-300-100 (784-300-100-10 on 28x28 inputs: 266,610 parameters)."""
    return MLP(input_shape, num_classes, LENET_300_100_WIDTHS)
