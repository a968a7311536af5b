"""What every run needs before its algorithm starts: the device, the data, the initial network θ_init,
and checkpoint files.

This is the only module besides the runners that turns an :class:`~lth_tune.config.ExperimentConfig`
into objects; everything below it (data, models, pruning, training, flatness, pacbayes) takes plain
arguments.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lth_tune.config import ExperimentConfig
from lth_tune.data import DataBundle, load_dataset
from lth_tune.models import build_model
from lth_tune.seeding import derived_seed, fork_rng

__all__ = [
    "init_model",
    "load_experiment_data",
    "read_checkpoint",
    "resolve_device",
    "tensor_digest",
    "uses_channels_last",
    "write_checkpoint",
]


def resolve_device(name: str) -> torch.device:
    """``experiment.device``: auto = CUDA when visible, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("experiment.device is 'cuda' but no GPU is visible: set experiment.device=auto or cpu")
    return torch.device(name)


def load_experiment_data(cfg: ExperimentConfig, device: torch.device | str) -> DataBundle:
    """The experiment's dataset on ``device``: splits, label noise and subsets fixed by ``cfg.seed``; inputs
    standardised with the statistics of ``cfg.normalization_split`` (never a certificate's bound set)."""
    d = cfg.data
    return load_dataset(
        d.dataset, root=d.root, download=d.download, val_fraction=d.val_fraction, label_noise=d.label_noise,
        seed=cfg.seed, device=device, train_subset=d.train_subset, augment=d.augment, num_samples=d.num_samples,
        normalize_on=cfg.normalization_split,
    )


def init_model(cfg: ExperimentConfig, data: DataBundle, device: torch.device | str, *,
               purpose: tuple[Any, ...] = ("init",)) -> nn.Module:
    """The network at initialisation θ_init, seeded by ``(seed, *purpose)`` only (no masks), on ``device``.

    IMP and PBP share it (``purpose = ("init",)``), so the same seed gives them the same θ_init; a
    lottery-ticket control that re-initialises draws another purpose."""
    with fork_rng(derived_seed(cfg.seed, *purpose)):
        model = build_model(
            cfg.model.name, input_shape=data.input_shape, num_classes=data.num_classes,
            **cfg.model.options(),
        )
    return model.to(device)


def uses_channels_last(cfg: ExperimentConfig, model: nn.Module) -> bool:
    """Channels-last layout (faster 2-D convolutions on CPU and tensor cores) unless configured off."""
    if cfg.train.channels_last is not None:
        return cfg.train.channels_last
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the names, shapes, dtypes and bytes of ``tensors`` (to check a rebuilt θ_init)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16; its bit patterns as int16
            t = t.view(torch.int16)
        h.update(t.numpy().tobytes())  # C order whatever the strides (channels-last weights included)
    return h.hexdigest()


def write_checkpoint(state: dict[str, Any], directory: str | Path, filename: str) -> Path:
    """Save a run's ``state_dict()`` (tensors and plain Python only) as ``directory/filename``."""
    path = Path(directory) / filename
    torch.save(state, path)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a run state written by :func:`write_checkpoint` with ``torch.load(weights_only=True)``."""
    return torch.load(Path(path), weights_only=True, map_location="cpu")
