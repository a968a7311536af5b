"""Model zoo: ``build_model(name, ...)`` and ``prunable_layers(model)`` (see docs/architecture.md).

Every model names its final classifier ``fc`` so studies can list it in ``pruning.ignore``.
All Linear/Conv weights use OpenLTH's Kaiming-normal initialisation; BatchNorm (resnet20, vgg16) uses
OpenLTH's default ``uniform`` init (gamma ~ U(0, 1), beta = 0). Seed ``torch.manual_seed`` before
``build_model`` for reproducible initialisations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from .conv1d import Conv1dNet, conv1d
from .lenet import LeNet5, lenet5
from .mlp import MLP, lenet_300_100, mlp
from .modes import eval_mode, model_device
from .resnet import CifarResNet, resnet20
from .resnet1d import ResNet1d, resnet1d
from .vgg import CifarVGG, vgg16

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the model registry: its builder, the size options it accepts, and a one-line description
    (used by the study-file documentation and by error messages)."""

    build: Callable[..., nn.Module]
    options: tuple[str, ...]
    description: str
    mlp: bool = False  # Linear layers with ReLU between them (per-example Monte Carlo certificates apply)


#: The model registry: the one list of architectures. ``ModelConfig.name`` accepts exactly these keys.
MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec(mlp, ("widths",), "fully connected ReLU network; widths = hidden sizes (default [100, 100])",
                     mlp=True),
    "conv1d": ModelSpec(conv1d, ("width",), "MNIST-1D ConvBase: 3 Conv1d layers of width channels (default 25)"),
    "lenet_300_100": ModelSpec(lenet_300_100, (), "LeNet-300-100 (Frankle & Carbin 2019, MNIST)", mlp=True),
    "lenet5": ModelSpec(lenet5, (), "LeNet-5 (paper 004, Fashion-MNIST)"),
    "resnet20": ModelSpec(resnet20, ("width",), "ResNet-20, OpenLTH cifar_resnet_20 (base width 16)"),
    "resnet1d": ModelSpec(resnet1d, ("width", "depth", "batchnorm", "residual"),
                          "1-D ResNet for MNIST-1D with ResNet-20's structure (width 16, depth 6·blocks+2 = 8, "
                          "batchnorm and residual switchable)"),
    "vgg16": ModelSpec(vgg16, ("width",), "VGG-16, OpenLTH cifar_vgg_16 (width 64 scales every layer)"),
}


def build_model(
    name: str,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    **options: Any,
) -> nn.Module:
    """Build a freshly initialised model from the registry :data:`MODELS`.

    ``options`` are the family's size options (``widths`` for ``mlp``; ``width`` for ``conv1d``, ``resnet20``,
    ``vgg16``); ``None`` means the family's default. Passing an option the family does not take raises
    ValueError (so a study cannot silently train a different network than it names).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    spec = MODELS[name]
    given = {k: v for k, v in options.items() if v is not None}
    for arg in given:
        if arg not in spec.options:
            raise ValueError(f"model {name!r} does not take {arg}= (accepts: {', '.join(spec.options) or 'nothing'})")
    return spec.build(tuple(int(s) for s in input_shape), int(num_classes), **given)


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
    "ModelSpec",
    "ResNet1d",
    "build_model",
    "count_parameters",
    "eval_mode",
    "model_device",
    "prunable_layers",
]
