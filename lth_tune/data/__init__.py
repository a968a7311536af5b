"""Datasets as whole tensors on the training device.

Label noise (paper 000 §3.1), a seeded validation hold-out, the prior/bound split of paper 004 §5.1
and batched GPU-friendly augmentation. See docs/architecture.md for the contract.
"""

from lth_tune.data.augment import random_crop_flip, random_flip
from lth_tune.data.bundle import DataBundle, Split, batches
from lth_tune.data.errors import DatasetNotFoundError
from lth_tune.data.loader import DATASETS, DatasetSpec, dataset_available, default_root, load_dataset
from lth_tune.data.noise import flip_labels
from lth_tune.data.normalize import channel_stats, standardize_with
from lth_tune.data.splits import prior_bound_split

__all__ = [
    "DATASETS",
    "DataBundle",
    "DatasetNotFoundError",
    "DatasetSpec",
    "Split",
    "batches",
    "channel_stats",
    "dataset_available",
    "default_root",
    "flip_labels",
    "load_dataset",
    "prior_bound_split",
    "random_crop_flip",
    "random_flip",
    "standardize_with",
]
