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


# ------------------------------------------------------------------------------ any size (data.num_samples)


def test_the_classic_generation_is_make_dataset(mnist1d_root: Path) -> None:
    """Generating without make_dataset's final standardisation and applying it here gives its exact output."""
    from mnist1d.data import make_dataset

    ref = make_dataset(m1d._dataset_args())
    ours = m1d.load_mnist1d(mnist1d_root)
    assert np.array_equal(ours.x_train.squeeze(1).numpy(), ref["x"].astype(np.float32))
    assert np.array_equal(ours.x_test.squeeze(1).numpy(), ref["x_test"].astype(np.float32))
    assert np.array_equal(ours.y_train.numpy(), ref["y"])


def test_any_size_keeps_the_classic_test_split(mnist1d_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    classic = m1d.load_mnist1d(mnist1d_root)
    big = m1d.load_mnist1d(mnist1d_root, num_samples=300)
    assert big.x_train.shape == (300, 1, 40) and torch.bincount(big.y_train).tolist() == [30] * 10
    assert torch.equal(big.x_test, classic.x_test) and torch.equal(big.y_test, classic.y_test)
    # independent draws: no generated example equals a classic one (train or test)
    known = torch.cat([classic.x_train, classic.x_test]).flatten(1)
    assert torch.cdist(big.x_train.flatten(1), known).min() > 1e-3
    # the same preprocessing as the classic examples: comparable scale
    assert abs(big.x_train.mean().item() - classic.x_train.mean().item()) < 0.1
    # cached, keyed by the size: a second load does not generate
    assert m1d.mnist1d_cache_path(mnist1d_root, 300).is_file()
    monkeypatch.setattr(m1d, "_generate_raw", lambda args: pytest.fail("regenerated a cached size"))
    again = m1d.load_mnist1d(mnist1d_root, num_samples=300)
    assert torch.equal(again.x_train, big.x_train)
    b = load_dataset("mnist1d", root=mnist1d_root, num_samples=300, val_fraction=0.2)
    assert (len(b.train), len(b.val), len(b.test)) == (240, 60, 1000)


def test_cache_name_follows_the_generator_source_without_importing_it(tmp_path: Path) -> None:
    import subprocess
    import sys
    import zlib

    import mnist1d

    package = Path(mnist1d.__file__).parent
    crc = 0
    for name in m1d.GENERATOR_MODULES:
        crc = zlib.crc32((package / name).read_bytes(), crc)
    assert m1d.mnist1d_cache_path(tmp_path).name == f"mnist1d_seed42_{crc:08x}.npz"
    assert m1d.mnist1d_cache_path(tmp_path, 300).name == f"mnist1d_n300_seed4242_{crc:08x}.npz"
    # naming a cached file (what every trial does first) does not import the generator (about a second)
    code = ("import sys; from lth_tune.data import mnist1d as m; m.mnist1d_cache_path('.'); "
            "print('mnist1d.data' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_damaged_cache_file_is_regenerated(mnist1d_root: Path) -> None:
    path = m1d.mnist1d_cache_path(mnist1d_root, 100)
    first = m1d.load_mnist1d(mnist1d_root, num_samples=100)
    path.write_bytes(b"not an npz file")
    assert torch.equal(m1d.load_mnist1d(mnist1d_root, num_samples=100).x_train, first.x_train)


@pytest.mark.parametrize("data, message", [
    ({"num_samples": 105}, "multiple of 10"),
    ({"num_samples": 3_000_000}, "exceeds 2000000"),
    ({"dataset": "cifar10", "num_samples": 1000}, "cifar10 has a fixed size"),
    ({"normalize_on": "val", "val_fraction": 0.0}, "needs a validation split"),
])
def test_size_and_normalisation_are_validated(data, message) -> None:
    from lth_tune.config import StudyError, study_from_dict

    with pytest.raises(StudyError, match=message) as err:
        study_from_dict({"name": "x", "experiment": {"data": data}})
    assert "experiment.data" in str(err.value) and "\n" not in str(err.value)


def test_inputs_standardised_with_the_validation_split(mnist1d_root: Path) -> None:
    b = load_dataset("mnist1d", root=mnist1d_root, val_fraction=0.2, normalize_on="val")
    assert abs(b.val.x.mean().item()) < 1e-5 and b.val.x.std(correction=0).item() == pytest.approx(1, abs=1e-4)
    assert abs(b.train.x.mean().item()) > 1e-4  # the bound set's statistics were not used
