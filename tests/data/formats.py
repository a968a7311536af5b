"""Writers for small files in torchvision's real on-disk dataset formats (MNIST IDX, CIFAR pickles)."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the IDX ("Pascal Vincent" SN3) format of the MNIST files."""
    assert array.dtype == np.uint8
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.tobytes())


def write_mnist(
    root: Path, folder: str, n_train: int = 30, n_test: int = 12, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write ``<root>/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``; return the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": (np.arange(n_train) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": ((np.arange(n_test) * 3) % 10).astype(np.uint8),
    }
    raw = root / folder / "raw"
    write_idx(raw / "train-images-idx3-ubyte", arrays["x_train"])
    write_idx(raw / "train-labels-idx1-ubyte", arrays["y_train"])
    write_idx(raw / "t10k-images-idx3-ubyte", arrays["x_test"])
    write_idx(raw / "t10k-labels-idx1-ubyte", arrays["y_test"])
    return arrays


def _pickle(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, per_batch: int = 6, n_test: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Write ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` (rows: 1024 R, G, B values)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rows, labels = [], []
    for b in range(1, 6):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        lab = [int(v) for v in rng.integers(0, 10, per_batch)]
        _pickle(
            folder / f"data_batch_{b}",
            {
                "batch_label": f"training batch {b} of 5",
                "data": data,
                "labels": lab,
                "filenames": [f"{b}_{i}.png" for i in range(per_batch)],
            },
        )
        rows.append(data)
        labels += lab
    test = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    test_labels = [int(v) for v in rng.integers(0, 10, n_test)]
    _pickle(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "data": test,
            "labels": test_labels,
            "filenames": [f"t_{i}.png" for i in range(n_test)],
        },
    )
    _pickle(
        folder / "batches.meta",
        {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch, "num_vis": 3072},
    )
    return {
        "x_train": np.concatenate(rows),
        "y_train": np.array(labels),
        "x_test": test,
        "y_test": np.array(test_labels),
    }


def write_cifar100(root: Path, n_train: int = 40, n_test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Write ``cifar-100-python/{train,test,meta}`` with ``fine_labels`` and ``coarse_labels``."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        _pickle(
            folder / split,
            {
                "filenames": [f"{split}_{i}.png" for i in range(n)],
                "batch_label": split,
                "fine_labels": fine,
                "coarse_labels": [f // 5 for f in fine],
                "data": data,
            },
        )
        out[f"x_{split}"], out[f"y_{split}"] = data, np.array(fine)
    _pickle(
        folder / "meta",
        {
            "fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"coarse{i}" for i in range(20)],
        },
    )
    return out
