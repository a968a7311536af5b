"""Model zoo: ``build_model(name, ...)`` and ``prunable_layers(model)`` (see docs/design.md).

Every model names its final classifier ``fc`` so studies can list it in ``pruning.ignore``.
All Linear/Conv weights use OpenLTH's Kaiming-normal initialisation; BatchNorm (resnet20, vgg16) uses
OpenLTH's default ``uniform`` init (gamma ~ U(0, 1), beta = 0). Seed ``torch.manual_seed`` before
``build_model`` for reproducible initialisations.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .conv1d import Conv1dNet, conv1d
from .lenet import LeNet5, lenet5
from .mlp import MLP, lenet_300_100, mlp
from .resnet import CifarResNet, resnet20
from .vgg import CifarVGG, vgg16

MODELS = ("mlp", "conv1d", "lenet_300_100", "lenet5", "resnet20", "vgg16")

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)

# which optional size argument each family accepts
_ACCEPTS = {
    "mlp": "widths",
    "conv1d": "width",
    "lenet_300_100": None,
    "lenet5": None,
    "resnet20": "width",
    "vgg16": "width",
}


def build_model(
    name: str,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    widths: Sequence[int] | None = None,
    width: int | None = None,
) -> nn.Module:
    """Build a freshly initialised model.

    ``widths``: hidden widths of ``mlp`` (default [100, 100]; paper 004 MNIST: [1000, 1000, 1000]).
    ``width``: channels of ``conv1d`` (default 25), base width of ``resnet20`` (default 16) and of
    ``vgg16`` (default 64; all VGG channels scale by width/64). Passing a size argument the family does
    not use raises ValueError (so a study cannot silently train a different network than it names).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    accepted = _ACCEPTS[name]
    for arg, value in (("widths", widths), ("width", width)):
        if value is not None and arg != accepted:
            raise ValueError(f"model {name!r} does not take {arg}= (accepts: {accepted or 'nothing'})")
    input_shape = tuple(int(s) for s in input_shape)
    num_classes = int(num_classes)
    if name == "mlp":
        return mlp(input_shape, num_classes, widths)
    if name == "conv1d":
        return conv1d(input_shape, num_classes, width)
    if name == "lenet_300_100":
        return lenet_300_100(input_shape, num_classes)
    if name == "lenet5":
        return lenet5(input_shape, num_classes)
    if name == "resnet20":
        return resnet20(input_shape, num_classes, width)
    return vgg16(input_shape, num_classes, width)


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` as ``(module_name, module)``, in registration
    order. Only their ``weight`` is ever pruned (biases and BatchNorm never are)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (``weight_orig`` counted once for masked layers)."""
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "MLP",
    "MODELS",
    "CifarResNet",
    "CifarVGG",
    "Conv1dNet",
    "LeNet5",
    "build_model",
    "count_parameters",
    "prunable_layers",
]
