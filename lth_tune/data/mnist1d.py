"""MNIST-1D (Greydanus 2020), generated offline and cached on disk.

The dataset is generated with ``mnist1d.data.make_dataset`` and the package's default arguments,
including its data-generation seed 42, so it is "the" MNIST-1D dataset (4000 train / 1000 test,
length 40) whatever the experiment seed. ``mnist1d.get_dataset`` is never called: it downloads.
"""

from __future__ import annotations

import os
import random
import uuid
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lth_tune.data.raw import RawData

MNIST1D_SEED = 42  # data-generation seed, independent of the experiment seed


def _dataset_args() -> Any:
    from mnist1d.data import get_dataset_args

    args = get_dataset_args()
    args.seed = MNIST1D_SEED
    return args


def _args_tag(args: Any) -> str:
    items = sorted((k, v) for k, v in vars(args).items() if k != "url")
    return f"{zlib.crc32(repr(items).encode()):08x}"


def mnist1d_cache_path(root: str | os.PathLike[str]) -> Path:
    """Where the generated dataset is cached: ``<root>/mnist1d/mnist1d_seed42_<args hash>.npz``."""
    return Path(root) / "mnist1d" / f"mnist1d_seed{MNIST1D_SEED}_{_args_tag(_dataset_args())}.npz"


def _generate(args: Any) -> dict[str, np.ndarray]:
    from mnist1d.data import make_dataset

    # make_dataset reseeds the global `random` and `numpy` generators: restore them afterwards.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {
        "x": data["x"].astype(np.float32),
        "y": data["y"].astype(np.int64),
        "x_test": data["x_test"].astype(np.float32),
        "y_test": data["y_test"].astype(np.int64),
    }


def _save_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write to a unique temporary file, then ``os.replace`` it: concurrent Ray trials never see a
    partial file, and the last writer wins with identical content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_mnist1d(root: str | os.PathLike[str]) -> RawData:
    """MNIST-1D as tensors with inputs shaped ``(N, 1, 40)``; generated on first use, then read from cache."""
    path = mnist1d_cache_path(root)
    if path.exists():
        with np.load(path) as f:
            arrays = {k: f[k] for k in ("x", "y", "x_test", "y_test")}
    else:
        arrays = _generate(_dataset_args())
        _save_atomic(path, arrays)
    return RawData(
        x_train=torch.from_numpy(arrays["x"]).unsqueeze(1),
        y_train=torch.from_numpy(arrays["y"]),
        x_test=torch.from_numpy(arrays["x_test"]).unsqueeze(1),
        y_test=torch.from_numpy(arrays["y_test"]),
        num_classes=10,
    )
