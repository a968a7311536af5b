"""Small MNIST-1D study files for the end-to-end tests, and the in-process reference they must reproduce."""

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import yaml

from lth_tune.config import load_study
from lth_tune.runs import IMPRun

COMPARED = ["density", "train_loss", "train_acc", "val_acc", "test_acc", "dist_init", "weight_norm"]
L2_GRID = {"train.lr": {"choice": [0.01, 0.1]}, "regularizer.lam": {"choice": [0.0, 0.01]}}


@contextlib.contextmanager
def sweep_process(cmd: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """Run ``lth-tune sweep …`` in its own process group and SIGKILL the group when the block exits: the driver and
    whatever it started itself (a local Ray cluster; not a cluster it joined with ``--address``), like a crash."""
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def write_study(tmp_path: Path, data_root: str, name: str, *, space=None, levels: int = 2, epochs: int = 1,
                search=None, train=None, resources=None, experiment=None) -> Path:
    study = {
        "name": name,
        "experiment": {
            "seed": 3,
            "data": {"dataset": "mnist1d", "root": data_root, "train_subset": 600, "val_fraction": 0.2},
            "model": {"name": "mlp", "widths": [32]},
            "train": {"epochs": epochs, "lr": 0.05, "batch_size": 64, **(train or {})},
            "regularizer": {"kind": "l2_init"},
            "pruning": {"levels": levels},
            **(experiment or {}),
        },
        "search": {"sampler": "grid", "seed": 0, "max_concurrent": 2, "max_failures": 2,
                   "space": space or L2_GRID, **(search or {})},
        "resources": {"cpu": 1, **(resources or {})},
        "output": {"dir": str(tmp_path / "results")},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def assert_each_trial_matches_uninterrupted_run(df: pd.DataFrame, study_path: Path, keys: list[str]) -> None:
    """Per-level metrics of every trial equal an in-process IMPRun (no Ray) with the same config and seed."""
    study = load_study(study_path)
    refs = {}
    for _, rows in df.groupby("trial_id"):
        params = {k: rows[f"config/{k}"].iloc[0] for k in keys}
        key = tuple(params.values())
        if key not in refs:
            ref = pd.DataFrame(IMPRun(study.experiment.with_params(params), device="cpu").run())
            refs[key] = ref.sort_values(["level", "branch"]).reset_index(drop=True)
        if "branch" not in rows:
            rows = rows.assign(branch="ticket")
        rows = rows.sort_values(["level", "branch"]).reset_index(drop=True)
        assert len(rows) == len(refs[key])
        assert list(rows["branch"]) == list(refs[key]["branch"])
        for col in COMPARED:
            pd.testing.assert_series_equal(rows[col], refs[key][col], check_names=False, rtol=1e-6)
