"""End-to-end: a small study through real Ray Tune + Optuna on MNIST-1D, including kill-and-resume."""

import os
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from lth_tune.cli import main
from tests.tune.studies import assert_each_trial_matches_uninterrupted_run, sweep_process, write_study

pytestmark = pytest.mark.e2e

METRICS = ["level", "density", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
           "dist_init", "weight_norm", "test_acc_gap", "time_s"]
KEYS = ["train.lr", "regularizer.lam"]


def make_study(tmp_path, data_root, *, levels=2, epochs=1, name="e2e"):
    return write_study(tmp_path, data_root, name, levels=levels, epochs=epochs)


def test_sweep_writes_results_tensorboard_and_summary(tmp_path, data_root, capsys):
    torch.set_num_threads(1)
    path = make_study(tmp_path, data_root)
    assert main(["sweep", str(path), "-v", "0"]) == 0
    out = capsys.readouterr().out
    assert "best configuration" in out and "test accuracy by density" in out
    for png in ("accuracy_vs_density.png", "accuracy_vs_lambda_l2_init.png"):  # figures drawn at the end
        assert (tmp_path / "results" / "e2e" / "analysis" / png).stat().st_size > 5000
    exp = tmp_path / "results" / "e2e"
    df = pd.read_csv(exp / "results.csv")
    assert len(df) == 4 * 3 and df["trial_id"].nunique() == 4
    assert not df.duplicated(["trial_id", "level"]).any()
    assert set(METRICS) <= set(df.columns)
    assert sorted(df["density"].round(4).unique()) == [0.64, 0.8, 1.0]
    # every grid point ran exactly once (grid sampler)
    assert sorted(map(tuple, df[["config/train.lr", "config/regularizer.lam"]].drop_duplicates().values)) == [
        (0.01, 0.0), (0.01, 0.01), (0.1, 0.0), (0.1, 0.01)]
    study = __import__("json").loads((exp / "study.json").read_text())
    assert study["grid_size"] == 4
    # TensorBoard: <experiment>/tensorboard, one run per trial named by its searched values, step = level, no
    # Tune internals, an HParams session per run; nothing in Tune's trial directories
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = exp / "tensorboard"
    assert sorted(d.name for d in tb.iterdir()) == ["lam=0 lr=0.01", "lam=0 lr=0.1", "lam=0.01 lr=0.01",
                                                    "lam=0.01 lr=0.1"]  # the study file's key order
    for d in tb.iterdir():
        acc = EventAccumulator(str(d))
        acc.Reload()
        tags = acc.Tags()["scalars"]
        assert {"accuracy/test", "accuracy/val", "loss/train", "ticket/density", "ticket/dist_init"} <= set(tags)
        assert not any(t.startswith("ray/") or "iteration" in t for t in tags)
        assert [e.step for e in acc.Scalars("ticket/density")] == [0, 1, 2]
        assert any(b"_hparams_/session_start_info" in f.read_bytes() for f in d.glob("events.out.tfevents*"))
    assert not list(exp.glob("trial_*/events.out.tfevents*"))
    assert f"TensorBoard: tensorboard --logdir {tb}" in out
    assert_each_trial_matches_uninterrupted_run(df, path, KEYS)


@pytest.mark.parametrize("cadence", [{}, {"report_every_s": 1e9, "checkpoint_every_s": 1e9}],
                         ids=["a report per step", "steps batched into the checkpointed reports"])
def test_controls_and_instability_through_tune_and_analyze(tmp_path, data_root, capsys, cadence):
    """Controls are steps of their own (rows told apart by branch), equal to an in-process run, and `analyze` turns
    them into winning-ticket verdicts; with ``search.report_every_s`` a report carries the steps since the last one,
    and the tables and TensorBoard get every step all the same."""
    torch.set_num_threads(1)
    path = write_study(tmp_path, data_root, "controls", levels=2,
                       space={"train.lr": {"choice": [0.02, 0.2]}, "seed": {"choice": [0, 1]}},
                       experiment={"controls": {"kinds": ["reinit", "random_prune"], "levels": "last"},
                                   "instability": {"levels": "last", "points": 3}}, search=cadence)
    assert main(["sweep", str(path), "-v", "0"]) == 0
    exp = tmp_path / "results" / "controls"
    df = pd.read_csv(exp / "results.csv")
    assert len(df) == 4 * 5 and not df.duplicated(["trial_id", "level", "branch"]).any()
    assert sorted(df.loc[df["level"] == 2, "branch"].unique()) == ["random_prune", "reinit", "ticket"]
    last = df[(df["level"] == 2) & (df["branch"] == "ticket")]
    assert last["instability_barrier"].notna().all() and (last["instability_barrier"] >= 0).all()
    assert (pd.read_csv(exp / "trials.csv")["levels"] == 3).all()  # ticket levels, controls not counted
    assert_each_trial_matches_uninterrupted_run(df, path, ["train.lr", "seed"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = sorted(d for d in (exp / "tensorboard").iterdir() if "seed=" in d.name)  # not the means over seeds
    assert len(runs) == 4
    for d in runs:
        acc = EventAccumulator(str(d))
        acc.Reload()
        assert [e.step for e in acc.Scalars("ticket/density")] == [0, 1, 2]
    # one Tune result per level and control (5), or a single one: the controls of the last level run before its
    # ticket step, which is the trial's last and the only one checkpointed
    iterations = pd.read_csv(next(exp.glob("trial_*/progress.csv")))["training_iteration"]
    assert len(iterations) == (1 if cadence else 5)
    text = (exp / "analysis" / "tickets.md").read_text()
    assert "lr=0.02" in text and "lr=0.2" in text and "reinit" in text
    assert (exp / "analysis" / "tickets_vs_controls.png").stat().st_size > 5000


def test_sweep_refuses_to_overwrite_and_bad_input_exits_2(tmp_path, data_root, capsys):
    path = make_study(tmp_path, data_root)
    (tmp_path / "results" / "e2e").mkdir(parents=True)
    (tmp_path / "results" / "e2e" / "study.json").write_text("{}")
    assert main(["sweep", str(path)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["sweep", str(path), "--set", "experiment.data.dataset=cifar10",
                 "--set", f"experiment.data.root={tmp_path / 'nowhere'}", "--set", "output.name=other"]) == 2
    err = capsys.readouterr().err
    assert "cifar-10-batches-py" in err and err.count("\n") == 1
    assert not (tmp_path / "results" / "other").exists()


@pytest.mark.parametrize("cadence", [{}, {"checkpoint_every_s": 1.0, "report_every_s": 0.6}],
                         ids=["every level reported and checkpointed", "levels held for reports and checkpoints"])
def test_kill_and_resume_gives_every_row_once_with_uninterrupted_numbers(tmp_path, data_root, cadence):
    # levels of ≈0.4 s (60 epochs of the tiny split): long enough that the driver dies with trials still running;
    # with the cadence, levels not yet reported or checkpointed at the kill are recomputed with the same numbers
    path = write_study(tmp_path, data_root, "resume", levels=3, epochs=60, search=cadence)
    exp = tmp_path / "results" / "resume"
    cmd = [sys.executable, "-m", "lth_tune.cli", "sweep", str(path), "-v", "0"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with sweep_process(cmd, env):  # killed with the Ray processes it started at the end of the block
        deadline = time.time() + 240
        while time.time() < deadline:
            if (exp / "results.csv").is_file() and len(pd.read_csv(exp / "results.csv")) >= 3:
                break
            time.sleep(0.5)
        else:
            pytest.fail("sweep produced no results in time")
    before = pd.read_csv(exp / "results.csv")
    assert len(before) < 4 * 4, "the kill came too late to test resume"
    done = subprocess.run(cmd + ["--resume"], check=False, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    df = pd.read_csv(exp / "results.csv")
    assert len(df) == 4 * 4 and not df.duplicated(["trial_id", "level"]).any()
    assert df["trial_id"].nunique() == 4
    # rows computed before the kill are kept unchanged
    merged = before.merge(df, on=["trial_id", "level"], suffixes=("_before", ""))
    assert len(merged) == len(before)
    assert (merged["test_acc_before"] == merged["test_acc"]).all()
    assert_each_trial_matches_uninterrupted_run(df, path, KEYS)
    # TensorBoard written live by both drivers, then rewritten from results.csv: every level once per run
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = sorted((exp / "tensorboard").iterdir())
    assert len(runs) == 4
    for d in runs:
        acc = EventAccumulator(str(d))
        acc.Reload()
        assert [e.step for e in acc.Scalars("accuracy/test")] == [0, 1, 2, 3]
