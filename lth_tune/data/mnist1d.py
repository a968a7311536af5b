"""MNIST-1D (Greydanus 2020), generated offline and cached on disk, at its classic size or any larger one.

Classic (``num_samples=None``): ``mnist1d.data.make_dataset`` with the package's default arguments and its
data-generation seed 42 — "the" MNIST-1D dataset (4000 train / 1000 test, length 40) whatever the
experiment seed. ``mnist1d.get_dataset`` is never called: it downloads.

Any size (``num_samples=N``): N training examples drawn from the same generator (the package's ``transform``
of its templates, N/10 per class) with another generation seed (:data:`MNIST1D_LARGE_SEED`), so they are
independent of the classic examples; the test split is always the classic 1000 test examples, fixed and
disjoint from every training, prior or bound split whatever N. ``make_dataset`` standardises each
generation with that generation's own mean and std; here every example is standardised with the *classic*
generation's constants, so train and test share one preprocessing that depends on neither (the loader then
standardises per channel with a reference split of its own).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import random
import uuid
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lth_tune.data.raw import RawData

MNIST1D_SEED = 42  # data-generation seed, independent of the experiment seed
MNIST1D_LARGE_SEED = 4242  # generation seed of the training examples of a dataset of any size
#: the largest generated training set (about 160 bytes per example in memory, plus generation time)
MAX_SAMPLES = 2_000_000
BYTES_PER_EXAMPLE = 40 * 4 + 8


def _dataset_args() -> Any:
    from mnist1d.data import get_dataset_args

    args = get_dataset_args()
    args.seed = MNIST1D_SEED
    return args


#: the package's modules that define the generated data: its default arguments and templates (``data``) and the
#: transformation of each example (``transform``)
GENERATOR_MODULES = ("data.py", "transform.py")


@functools.cache
def generator_tag() -> str:
    """A hash of the installed generator's source (:data:`GENERATOR_MODULES`), so a cache file made by another
    version of the generator is never read. Read as bytes, not imported: importing ``mnist1d.data`` takes about
    a second (SciPy, requests), which every trial process would pay just to name a cached file."""
    spec = importlib.util.find_spec("mnist1d")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the mnist1d package is not installed: pip install mnist1d")
    package = Path(next(iter(spec.submodule_search_locations)))
    crc = 0
    for name in GENERATOR_MODULES:
        crc = zlib.crc32((package / name).read_bytes(), crc)
    return f"{crc:08x}"


def mnist1d_cache_path(root: str | os.PathLike[str], num_samples: int | None = None) -> Path:
    """Where the generated dataset is cached: ``<root>/mnist1d/mnist1d_seed42_<generator hash>.npz`` for the
    classic dataset, ``mnist1d_n<N>_seed4242_<generator hash>.npz`` for N training examples."""
    tag = generator_tag()
    if num_samples is None:
        return Path(root) / "mnist1d" / f"mnist1d_seed{MNIST1D_SEED}_{tag}.npz"
    return Path(root) / "mnist1d" / f"mnist1d_n{num_samples}_seed{MNIST1D_LARGE_SEED}_{tag}.npz"


def check_num_samples(num_samples: int | None) -> None:
    """``num_samples`` must be a positive multiple of 10 (one tenth per class) and at most :data:`MAX_SAMPLES`."""
    if num_samples is None:
        return
    if num_samples < 10 or num_samples % 10:
        raise ValueError(f"num_samples must be a positive multiple of 10 (N/10 examples per class), got {num_samples}")
    if num_samples > MAX_SAMPLES:
        raise ValueError(f"num_samples={num_samples} exceeds {MAX_SAMPLES} (about "
                         f"{num_samples * BYTES_PER_EXAMPLE / 2**30:.1f} GiB per copy in memory): lower it")


def _generate_raw(args: Any) -> tuple[np.ndarray, np.ndarray]:
    """``make_dataset``'s examples before its final standardisation (same draws, same order)."""
    from mnist1d.data import get_templates, set_seed, transform

    templates = get_templates()
    set_seed(args.seed)
    xs, ys = [], []
    per_class = args.num_samples // len(templates["y"])
    for label in range(len(templates["y"])):
        for _ in range(per_class):
            x, _t = transform(templates["x"][label], templates["t"], args)
            xs.append(x)
            ys.append(templates["y"][label])
    shuffle = np.random.permutation(len(ys))
    return np.stack(xs)[shuffle], np.stack(ys)[shuffle]


def _restoring_global_rng(fn, *args):
    """The generator reseeds the global ``random`` and ``numpy`` generators: restore them afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        return fn(*args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _generate(args: Any) -> dict[str, np.ndarray]:
    """The classic dataset: ``make_dataset``'s standardisation (its generation's mean/std) and split."""
    xs, ys = _restoring_global_rng(_generate_raw, args)
    mean, std = xs.mean(), xs.std()
    xs = (xs - mean) / std
    split = int(len(ys) * args.train_split)
    return {
        "x": xs[:split].astype(np.float32),
        "y": ys[:split].astype(np.int64),
        "x_test": xs[split:].astype(np.float32),
        "y_test": ys[split:].astype(np.int64),
        "scale": np.array([mean, std], dtype=np.float64),
    }


def _generate_large(num_samples: int, classic: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``num_samples`` training examples from :data:`MNIST1D_LARGE_SEED`, standardised with the classic
    generation's constants; the classic test split."""
    args = _dataset_args()
    args.seed = MNIST1D_LARGE_SEED
    args.num_samples = num_samples
    xs, ys = _restoring_global_rng(_generate_raw, args)
    mean, std = classic["scale"]
    return {
        "x": ((xs - mean) / std).astype(np.float32),
        "y": ys.astype(np.int64),
        "x_test": classic["x_test"],
        "y_test": classic["y_test"],
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


def _cached(path: Path, make, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    if path.exists():
        try:
            with np.load(path) as f:
                if all(k in f for k in keys):
                    return {k: f[k] for k in keys}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            pass  # a damaged cache file is regenerated (the generator is deterministic)
    arrays = make()
    _save_atomic(path, arrays)
    return arrays


def load_mnist1d(root: str | os.PathLike[str], num_samples: int | None = None) -> RawData:
    """MNIST-1D as tensors with inputs shaped ``(N, 1, 40)``; generated on first use, then read from cache.

    ``num_samples=None``: the classic 4000/1000 dataset; ``N``: N generated training examples and the
    classic test split."""
    check_num_samples(num_samples)
    classic = _cached(mnist1d_cache_path(root), lambda: _generate(_dataset_args()),
                      ("x", "y", "x_test", "y_test", "scale"))
    if num_samples is None:
        arrays = classic
    else:
        arrays = _cached(mnist1d_cache_path(root, num_samples), lambda: _generate_large(num_samples, classic),
                         ("x", "y", "x_test", "y_test"))
    return RawData(
        x_train=torch.from_numpy(arrays["x"]).unsqueeze(1),
        y_train=torch.from_numpy(arrays["y"]),
        x_test=torch.from_numpy(arrays["x_test"]).unsqueeze(1),
        y_test=torch.from_numpy(arrays["y_test"]),
        num_classes=10,
    )
