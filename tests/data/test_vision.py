"""MNIST / Fashion-MNIST / CIFAR-10 / CIFAR-100 through torchvision, from files written in the real formats."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from lth_tune.data import DatasetNotFoundError, dataset_available, load_dataset
from lth_tune.data.vision import load_vision

from .formats import write_cifar10, write_cifar100, write_mnist


def _denormalise(x: torch.Tensor, pixels_train: np.ndarray) -> torch.Tensor:
    """Undo the per-channel normalisation given the train pixels (N, C, H, W) in [0, 255]."""
    p = torch.from_numpy(pixels_train).double() / 255.0
    mean = p.mean(dim=(0, 2, 3), keepdim=True)
    std = p.std(dim=(0, 2, 3), keepdim=True, correction=0)
    return (x.double() * std + mean) * 255.0


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_family_round_trip(tmp_path: Path, name: str, folder: str) -> None:
    arrays = write_mnist(tmp_path, folder)
    assert dataset_available(name, tmp_path)
    b = load_dataset(name, root=tmp_path, val_fraction=0.0)
    assert b.input_shape == (1, 28, 28) and b.num_classes == 10 and b.augment is False
    assert b.train.x.shape == (30, 1, 28, 28) and b.test.x.shape == (12, 1, 28, 28)
    assert b.train.x.dtype == torch.float32
    assert b.train.y.tolist() == arrays["y_train"].tolist()
    assert b.test.y.tolist() == arrays["y_test"].tolist()
    pixels = arrays["x_train"][:, None]
    back = _denormalise(b.train.x, pixels)
    np.testing.assert_allclose(back.numpy(), pixels, atol=1e-3)
    np.testing.assert_allclose(_denormalise(b.test.x, pixels).numpy(), arrays["x_test"][:, None], atol=1e-3)
    assert abs(b.train.x.mean().item()) < 1e-5


def test_cifar10_round_trip(tmp_path: Path, skip_cifar_md5: None) -> None:
    arrays = write_cifar10(tmp_path)
    raw = load_vision("cifar10", tmp_path)
    assert raw.x_train.shape == (30, 3, 32, 32) and raw.x_train.dtype == torch.uint8
    # a row of the pickle is 1024 red, then green, then blue values, each 32x32 row-major
    k, c, h, w = 7, 1, 2, 3
    assert raw.x_train[k, c, h, w].item() == arrays["x_train"][k, c * 1024 + h * 32 + w]
    np.testing.assert_array_equal(raw.x_train.reshape(30, -1).numpy(), arrays["x_train"])
    np.testing.assert_array_equal(raw.x_test.reshape(8, -1).numpy(), arrays["x_test"])
    assert raw.y_train.tolist() == arrays["y_train"].tolist()  # batches 1..5 in order

    b = load_dataset("cifar10", root=tmp_path, val_fraction=0.0)
    assert b.input_shape == (3, 32, 32) and b.num_classes == 10 and b.augment is True
    back = _denormalise(b.train.x, raw.x_train.numpy())
    np.testing.assert_allclose(back.numpy(), raw.x_train.numpy(), atol=1e-3)
    assert b.test.y.tolist() == arrays["y_test"].tolist()
    per_channel = b.train.x.mean(dim=(0, 2, 3))
    assert torch.allclose(per_channel, torch.zeros(3), atol=1e-5)


def test_cifar100_fine_labels(tmp_path: Path, skip_cifar_md5: None) -> None:
    arrays = write_cifar100(tmp_path)
    b = load_dataset("cifar100", root=tmp_path, val_fraction=0.0, augment=False)
    assert b.num_classes == 100 and b.augment is False
    assert b.train.y.tolist() == arrays["y_train"].tolist()
    assert b.test.y.tolist() == arrays["y_test"].tolist()
    raw = load_vision("cifar100", tmp_path)
    np.testing.assert_array_equal(raw.x_test.reshape(10, -1).numpy(), arrays["x_test"])


@pytest.mark.parametrize(
    ("name", "directory"),
    [
        ("mnist", "MNIST/raw"),
        ("fashion_mnist", "FashionMNIST/raw"),
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
    ],
)
def test_missing_files_raise_with_directory(tmp_path: Path, name: str, directory: str) -> None:
    assert not dataset_available(name, tmp_path)
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset(name, root=tmp_path)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert str(tmp_path / directory) in msg and name in msg
    assert "--set experiment.data.download=true" in msg and "\n" not in msg


def test_partial_mnist_is_not_available(tmp_path: Path) -> None:
    write_mnist(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    assert not dataset_available("mnist", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", root=tmp_path)


def test_failed_download_raises_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets as tvd

    calls = []

    def offline(self: object) -> None:
        calls.append(1)
        raise URLError("no network")

    monkeypatch.setattr(tvd.MNIST, "download", offline)
    with pytest.raises(DatasetNotFoundError, match="download failed") as err:
        load_dataset("mnist", root=tmp_path, download=True)
    assert calls and str(tmp_path / "MNIST" / "raw") in str(err.value)
    calls.clear()
    with pytest.raises(DatasetNotFoundError):
        load_dataset("mnist", root=tmp_path)  # download defaults to False: never attempted
    assert not calls


def test_cifar_with_wrong_md5_is_reported_corrupted(tmp_path: Path) -> None:
    write_cifar10(tmp_path)  # present, but not the real files: torchvision's md5 check fails
    assert dataset_available("cifar10", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="corrupted"):
        load_dataset("cifar10", root=tmp_path)


def test_label_noise_and_split_on_images(tmp_path: Path, skip_cifar_md5: None) -> None:
    write_cifar10(tmp_path, per_batch=20)
    clean = load_dataset("cifar10", root=tmp_path, val_fraction=0.0, seed=5)
    noisy = load_dataset("cifar10", root=tmp_path, val_fraction=0.0, label_noise=0.3, seed=5)
    assert int(noisy.noisy.sum()) == 30
    assert torch.equal(noisy.noisy, noisy.train.y != clean.train.y)
    assert torch.equal(noisy.test.y, clean.test.y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(tmp_path: Path) -> None:
    write_mnist(tmp_path, "MNIST")
    cpu = load_dataset("mnist", root=tmp_path, seed=1, label_noise=0.2)
    gpu = load_dataset("mnist", root=tmp_path, seed=1, label_noise=0.2, device="cuda")
    assert gpu.train.x.is_cuda and gpu.noisy.is_cuda
    assert torch.equal(cpu.train.y, gpu.train.y.cpu()) and torch.equal(cpu.noisy, gpu.noisy.cpu())
    assert torch.allclose(cpu.train.x, gpu.train.x.cpu(), atol=1e-5)
