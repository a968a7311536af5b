"""Fixtures for the data tests: one thread (shared CI cores), one MNIST-1D generation per session, and
the CIFAR md5 bypass."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def mnist1d_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding the cached MNIST-1D file, generated once for the whole session."""
    from lth_tune.data import load_dataset

    root = tmp_path_factory.mktemp("mnist1d_root")
    load_dataset("mnist1d", root=root)
    return root


@pytest.fixture
def skip_cifar_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision checks the md5 of the real CIFAR files (data batches and meta). Replace only that check
    by an existence check; the pickles are still parsed by torchvision."""
    from torchvision.datasets import cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
