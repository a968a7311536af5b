"""MNIST-1D: offline generation, on-disk cache, shapes, normalisation."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from lth_tune.data import DATASETS, dataset_available, default_root, load_dataset
from lth_tune.data import mnist1d as m1d


def test_shapes_classes_and_sizes(mnist1d_root: Path) -> None:
    b = load_dataset("mnist1d", root=mnist1d_root, val_fraction=0.1)
    assert (len(b.train), len(b.val), len(b.test)) == (3600, 400, 1000)
    assert b.input_shape == (1, 40) and b.num_classes == 10
    for split in (b.train, b.val, b.test):
        assert split.x.dtype == torch.float32 and split.x.shape[1:] == (1, 40)
        assert split.y.dtype == torch.int64
        assert set(split.y.unique().tolist()) == set(range(10))
    assert b.augment is False
    assert b.noisy.dtype == torch.bool and b.noisy.shape == (3600,) and not b.noisy.any()


def test_train_split_is_normalised(mnist1d_root: Path) -> None:
    b = load_dataset("mnist1d", root=mnist1d_root)
    assert abs(b.train.x.mean().item()) < 1e-5
    assert b.train.x.std(correction=0).item() == pytest.approx(1.0, abs=1e-4)
    # val/test use the train statistics, so they are only close to standardised
    assert abs(b.test.x.mean().item()) < 0.1 and 0.9 < b.test.x.std().item() < 1.1


def test_cache_file_is_reused_and_identical(mnist1d_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = m1d.mnist1d_cache_path(mnist1d_root)
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left behind
    first = load_dataset("mnist1d", root=mnist1d_root, seed=3)

    def fail(*args: object) -> None:
        raise AssertionError("cache miss: regenerated")

    monkeypatch.setattr(m1d, "_generate", fail)
    second = load_dataset("mnist1d", root=mnist1d_root, seed=3)
    for a, b in ((first.train, second.train), (first.val, second.val), (first.test, second.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


def test_dataset_does_not_depend_on_experiment_seed(mnist1d_root: Path) -> None:
    a = load_dataset("mnist1d", root=mnist1d_root, seed=0, val_fraction=0.0)
    b = load_dataset("mnist1d", root=mnist1d_root, seed=1, val_fraction=0.0)
    # with no hold-out, the train set is the whole (fixed) dataset in its stored order
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)


def test_generation_uses_package_defaults_and_keeps_global_rng(mnist1d_root: Path) -> None:
    from mnist1d.data import get_dataset_args

    assert vars(m1d._dataset_args()) == vars(get_dataset_args())  # the package's dataset, seed 42
    random.seed(123)
    np.random.seed(123)
    before = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    arrays = m1d._generate(m1d._dataset_args())
    assert (random.random(), np.random.rand()) == before  # make_dataset's reseeding is undone

    raw = m1d.load_mnist1d(mnist1d_root)  # the cached file holds exactly the generated arrays
    np.testing.assert_array_equal(raw.x_train.squeeze(1).numpy(), arrays["x"])
    np.testing.assert_array_equal(raw.y_test.numpy(), arrays["y_test"])
    assert arrays["x"].dtype == np.float32 and arrays["x"].shape == (4000, 40)


def test_augment_is_rejected_for_1d(mnist1d_root: Path) -> None:
    with pytest.raises(ValueError, match="images"):
        load_dataset("mnist1d", root=mnist1d_root, augment=True)


def test_names_roots_and_availability(
    mnist1d_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert tuple(DATASETS) == ("mnist1d", "mnist", "fashion_mnist", "cifar10", "cifar100")
    monkeypatch.setenv("LTH_TUNE_DATA", str(tmp_path / "d"))
    assert default_root() == tmp_path / "d"
    monkeypatch.delenv("LTH_TUNE_DATA")
    assert default_root() == Path.home() / ".cache" / "lth_tune" / "data"
    assert dataset_available("mnist1d", tmp_path)  # generated offline, always available
    assert dataset_available("MNIST1D", mnist1d_root)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet", root=tmp_path)
