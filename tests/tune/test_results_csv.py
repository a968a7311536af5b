"""ResultsTable's incremental CSV (each row formatted once) reads back exactly as the DataFrame writer's output."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd

from lth_tune.tune.results import ResultsTable


def trial(tid: str, lr: float):
    return SimpleNamespace(trial_id=tid, config={"train.lr": lr, "model.widths": [3, 4]})


def feed(table: ResultsTable) -> None:
    a, b = trial("b2", 0.1), trial("a1", 0.01)
    results = [
        (a, {"level": 0, "val_acc": 0.5, "density": 1.0, "time_s": 1.25, "note": "x, \"quoted\""}),
        (b, {"level": 0, "val_acc": np.float64(1 / 3), "density": 1.0, "time_s": 2.0}),
        (a, {"level": 1, "val_acc": float("nan"), "density": 0.8, "time_s": 0.1, "flag": True}),
        (a, {"level": 1, "branch": "reinit", "val_acc": 0.25, "density": 0.8, "time_s": 0.2}),
        (b, {"level": 1, "val_acc": 0.75, "density": 0.8, "time_s": 3e-7, "instability_barrier": 0.125,
             "stage": np.int64(3)}),
        (a, {"level": 1, "val_acc": 0.5, "density": 0.8, "time_s": 0.3, "flag": False}),  # restored: replaces
        (a, {"level": 2, "val_acc": math.inf, "density": 0.64, "time_s": 1e12}),
    ]
    for t, r in results:
        table.on_trial_result(0, [a, b], t, r)
    table.on_trial_complete(0, [a, b], b)


def test_incremental_csv_reads_back_as_the_dataframe_writer(tmp_path):
    fast, slow = ResultsTable(tmp_path / "fast"), ResultsTable(tmp_path / "slow", fast=False)
    for t in (fast, slow):
        feed(t)
    for name in ("results.csv", "trials.csv"):
        f = pd.read_csv(tmp_path / "fast" / name)
        s = pd.read_csv(tmp_path / "slow" / name)
        assert sorted(f.columns) == sorted(s.columns)
        pd.testing.assert_frame_equal(f[sorted(f.columns)], s[sorted(s.columns)])
    df = pd.read_csv(tmp_path / "fast" / "results.csv")
    assert list(zip(df["trial_id"], df["level"], df["branch"])) == [
        ("a1", 0, "ticket"), ("a1", 1, "ticket"), ("b2", 0, "ticket"), ("b2", 1, "reinit"), ("b2", 1, "ticket"),
        ("b2", 2, "ticket")]
    resumed = ResultsTable(tmp_path / "fast")  # a driver that resumes starts from the file and writes it again
    resumed.flush(force=True)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "fast" / "results.csv"), df)
