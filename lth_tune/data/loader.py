"""``load_dataset``: one call from a dataset name to a :class:`DataBundle` on the device."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from lth_tune.data.bundle import DataBundle, Split
from lth_tune.data.mnist1d import load_mnist1d
from lth_tune.data.noise import flip_labels
from lth_tune.data.normalize import channel_stats
from lth_tune.data.raw import RawData
from lth_tune.data.splits import holdout_split, subset_indices
from lth_tune.data.vision import VISION_SPECS, load_vision, vision_available
from lth_tune.seeding import generator


@dataclass(frozen=True)
class DatasetSpec:
    """One entry of the dataset registry: how to read it, whether it is on disk, its default augmentation,
    and a one-line description (for the study-file documentation and error messages)."""

    load: Callable[[Path, bool, int | None], RawData]  # (root, download, num_samples) -> RawData
    available: Callable[[Path], bool]          # root -> all files present (mnist1d: always)
    augment: bool                              # random crop + flip by default
    description: str
    input_shape: tuple[int, ...]               # one example, channels first
    num_classes: int
    train_size: int                            # training examples as shipped (mnist1d: the classic size)


def _vision(name: str) -> tuple[Callable[[Path, bool, int | None], RawData], Callable[[Path], bool]]:
    def load(root: Path, download: bool, num_samples: int | None) -> RawData:
        if num_samples is not None:
            raise ValueError(f"num_samples is for generated datasets (mnist1d); {name} has a fixed size")
        return load_vision(name, root, download=download)

    return load, lambda root: vision_available(name, root)


#: The dataset registry: the one list of datasets. ``DataConfig.dataset`` accepts exactly these keys.
DATASETS: dict[str, DatasetSpec] = {
    "mnist1d": DatasetSpec(lambda root, download, num_samples: load_mnist1d(root, num_samples), lambda root: True,
                           False, "MNIST-1D (Greydanus 2020), generated offline and cached, any size "
                           "(data.num_samples); the embedded default", (1, 40), 10, 4000),
    "mnist": DatasetSpec(*_vision("mnist"), False, "MNIST through torchvision (MNIST/raw under the data root)",
                         (1, 28, 28), 10, 60000),
    "fashion_mnist": DatasetSpec(*_vision("fashion_mnist"), False,
                                 "Fashion-MNIST through torchvision (FashionMNIST/raw)", (1, 28, 28), 10, 60000),
    "cifar10": DatasetSpec(*_vision("cifar10"), True, "CIFAR-10 through torchvision (cifar-10-batches-py)",
                           (3, 32, 32), 10, 50000),
    "cifar100": DatasetSpec(*_vision("cifar100"), True, "CIFAR-100 through torchvision (cifar-100-python)",
                            (3, 32, 32), 100, 50000),
}
assert set(DATASETS) - {"mnist1d"} == set(VISION_SPECS)


def default_root() -> Path:
    """``$LTH_TUNE_DATA`` if set, else ``~/.cache/lth_tune/data``."""
    env = os.environ.get("LTH_TUNE_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lth_tune" / "data"


def _canonical(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return key


def _root(root: str | os.PathLike[str] | None) -> Path:
    return default_root() if root is None else Path(root).expanduser()


def dataset_available(name: str, root: str | os.PathLike[str] | None = None) -> bool:
    """Whether ``load_dataset(name, root=root)`` can run without downloading (mnist1d: always)."""
    return DATASETS[_canonical(name)].available(_root(root))


def _to_float(x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    x = x.to(device)  # move uint8 first: 4x less to transfer
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.1,
    label_noise: float = 0.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
    train_subset: int | None = None,
    augment: bool | None = None,
    download: bool = False,
    num_samples: int | None = None,
    normalize_on: str = "train",
) -> DataBundle:
    """Load ``name`` into a :class:`DataBundle` on ``device``.

    Steps, each seeded by ``seed`` through its own generator:

    1. ``train_subset``: keep that many random training examples; they form the training set S
       (so ``len(train) + len(val) == train_subset``).
    2. ``label_noise``: flip exactly ``round(label_noise * |S|)`` labels of S to a uniformly chosen
       other class (paper 000 §3.1); the test set stays clean. ``bundle.noisy`` marks the flipped
       examples of the final train split (flipped examples that land in val stay noisy there too).
    3. ``val_fraction``: hold out ``round(val_fraction * |S|)`` examples of S as the validation split
       (0 gives an empty val split). The hold-out does not depend on ``label_noise``.
    4. Normalise every split per channel with the mean and std of the ``normalize_on`` split (``train``, or
       ``val`` when the training split is a PAC-Bayes bound set: the predictor's preprocessing must not
       depend on it).

    ``num_samples`` generates a dataset of that many training examples (mnist1d only).

    ``augment=None`` means True for cifar10/cifar100 and False otherwise. ``download=True`` lets
    torchvision fetch missing files; otherwise missing files raise :class:`DatasetNotFoundError`.
    """
    key = _canonical(name)
    root_p = _root(root)
    raw = DATASETS[key].load(root_p, download, num_samples)
    if augment is None:
        augment = DATASETS[key].augment
    if augment and raw.x_train.dim() != 4:
        raise ValueError(f"augmentation (random crop + flip) needs images; {key} inputs are 1-D")

    s_idx = subset_indices(len(raw.y_train), train_subset, generator=generator(seed, "subset"))
    y_s, flipped = flip_labels(
        raw.y_train[s_idx], label_noise, raw.num_classes, generator=generator(seed, "noise")
    )
    train_pos, val_pos = holdout_split(len(s_idx), val_fraction, generator=generator(seed, "val"))
    if len(train_pos) == 0:
        raise ValueError(f"empty train split: |S|={len(s_idx)}, val_fraction={val_fraction}")

    x_train = _to_float(raw.x_train[s_idx[train_pos]], device)
    x_val = _to_float(raw.x_train[s_idx[val_pos]], device)
    x_test = _to_float(raw.x_test, device)
    if normalize_on not in ("train", "val"):
        raise ValueError(f"normalize_on must be 'train' or 'val', got {normalize_on!r}")
    if normalize_on == "val" and len(val_pos) == 0:
        raise ValueError("normalize_on='val' needs a validation split: val_fraction > 0")
    mean, std = channel_stats(x_train if normalize_on == "train" else x_val)
    for x in (x_train, x_val, x_test):
        x.sub_(mean).div_(std)

    return DataBundle(
        train=Split(x_train, y_s[train_pos].to(device)),
        val=Split(x_val, y_s[val_pos].to(device)),
        test=Split(x_test, raw.y_test.to(device)),
        num_classes=raw.num_classes,
        input_shape=tuple(raw.x_train.shape[1:]),
        augment=bool(augment),
        noisy=flipped[train_pos].to(device),
    )
