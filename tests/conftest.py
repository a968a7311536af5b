import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


@pytest.fixture
def data_root(tmp_path_factory):
    """A shared MNIST-1D cache for the session (generated offline once)."""
    return str(tmp_path_factory.getbasetemp() / "data")
