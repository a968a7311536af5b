"""MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 through torchvision's dataset classes.

Files are parsed by ``torchvision.datasets.<Class>`` (so the on-disk layout is exactly torchvision's)
and converted once to whole uint8 tensors ``(N, C, H, W)``. Nothing is downloaded unless asked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lth_tune.data.errors import DatasetNotFoundError
from lth_tune.data.raw import RawData

_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class VisionSpec:
    cls_name: str  # torchvision.datasets class
    folder: str  # directory under root that torchvision reads
    files: tuple[str, ...]  # files torchvision needs in that directory
    num_classes: int


VISION_SPECS: dict[str, VisionSpec] = {
    "mnist": VisionSpec("MNIST", "MNIST/raw", _MNIST_FILES, 10),
    "fashion_mnist": VisionSpec("FashionMNIST", "FashionMNIST/raw", _MNIST_FILES, 10),
    "cifar10": VisionSpec(
        "CIFAR10",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
        10,
    ),
    "cifar100": VisionSpec("CIFAR100", "cifar-100-python", ("train", "test", "meta"), 100),
}


def expected_dir(name: str, root: str | os.PathLike[str]) -> Path:
    """The directory torchvision reads ``name`` from."""
    return Path(root) / VISION_SPECS[name].folder


def _legacy_mnist_exists(spec: VisionSpec, root: Path) -> bool:
    """torchvision's old MNIST cache (``<root>/<Class>/processed/{training,test}.pt``), still read by it."""
    processed = root / spec.cls_name / "processed"
    return all((processed / f).is_file() for f in ("training.pt", "test.pt"))


def vision_available(name: str, root: str | os.PathLike[str]) -> bool:
    """Whether all files of ``name`` are on disk (existence only; torchvision checks CIFAR md5s on load)."""
    spec = VISION_SPECS[name]
    folder = expected_dir(name, root)
    if all((folder / f).is_file() for f in spec.files):
        return True
    return spec.cls_name in ("MNIST", "FashionMNIST") and _legacy_mnist_exists(spec, Path(root))


def not_found_message(
    name: str, root: str | os.PathLike[str], reason: str = "not found", *, tried_download: bool = False
) -> str:
    """One line: the dataset, the directory and files torchvision expects, and the fix."""
    spec = VISION_SPECS[name]
    folder = expected_dir(name, root)
    how = (
        "rerun on a machine with network access"
        if tried_download
        else ("rerun with --set experiment.data.download=true on a machine with network access")
    )
    return (
        f"dataset '{name}' {reason}: torchvision expects {', '.join(spec.files)} in {folder}. "
        f"Fix: {how}, or copy the files into {folder}."
    )


def _to_tensors(ds: object) -> tuple[torch.Tensor, torch.Tensor]:
    data = ds.data  # type: ignore[attr-defined]
    targets = ds.targets  # type: ignore[attr-defined]
    if isinstance(data, np.ndarray):  # CIFAR: (N, H, W, C) uint8
        x = torch.from_numpy(np.ascontiguousarray(data)).permute(0, 3, 1, 2).contiguous()
    else:  # MNIST family: (N, H, W) uint8 tensor
        x = torch.as_tensor(data).unsqueeze(1).contiguous()
    y = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
    return x, y


def load_vision(name: str, root: str | os.PathLike[str], *, download: bool = False) -> RawData:
    """Read ``name`` with torchvision into uint8 ``(N, C, H, W)`` tensors.

    Raises :class:`DatasetNotFoundError` when the files are missing and ``download`` is off or fails,
    or when torchvision rejects them (e.g. a CIFAR md5 mismatch).
    """
    import torchvision.datasets as tvd

    spec = VISION_SPECS[name]
    cls = getattr(tvd, spec.cls_name)
    root_s = os.fspath(root)
    if not vision_available(name, root):
        if not download:
            raise DatasetNotFoundError(not_found_message(name, root))
        try:
            cls(root_s, train=True, download=True)
            cls(root_s, train=False, download=True)
        except Exception as e:  # offline: URLError, OSError, RuntimeError, ...
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
            reason = f"not found and download failed ({type(e).__name__}: {first_line})"
            raise DatasetNotFoundError(not_found_message(name, root, reason, tried_download=True)) from e
    try:
        train = cls(root_s, train=True, download=False)
        test = cls(root_s, train=False, download=False)
    except RuntimeError as e:
        raise DatasetNotFoundError(not_found_message(name, root, "not found or corrupted")) from e
    x_train, y_train = _to_tensors(train)
    x_test, y_test = _to_tensors(test)
    return RawData(x_train, y_train, x_test, y_test, spec.num_classes)
