"""Weight initialisation shared by all model families (OpenLTH ``models/initializers.py`` and
``models/bn_initializers.py``)."""

from __future__ import annotations

import torch
from torch import nn

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d)


def kaiming_normal(module: nn.Module) -> None:
    """OpenLTH ``kaiming_normal``: He-normal weights (fan_in, ReLU gain) for Linear/Conv layers.

    Biases keep PyTorch's default initialisation, as in OpenLTH.
    """
    if isinstance(module, _WEIGHTED):
        nn.init.kaiming_normal_(module.weight)


def bn_uniform(module: nn.Module) -> None:
    """OpenLTH ``batchnorm_init='uniform'`` (default for its CIFAR models): gamma ~ U(0, 1), beta = 0."""
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        with torch.no_grad():
            module.weight.copy_(torch.rand(module.weight.shape))
            module.bias.zero_()


def openlth_init(model: nn.Module, *, batchnorm: bool = True) -> nn.Module:
    """Apply OpenLTH's default initialisation to every submodule (in registration order)."""
    model.apply(kaiming_normal)
    if batchnorm:
        model.apply(bn_uniform)
    return model
