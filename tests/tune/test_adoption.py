"""A trial that a crashed driver lost is adopted by the trial asked for again in its place (lth_tune.tune.adoption):
found by its identity (the experiment configuration of its grid point), continued from its newest checkpoint, its
finished steps reported again under the new id, never recomputed and never duplicated."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from lth_tune.config import load_study
from lth_tune.runs import IMPRun, write_checkpoint
from lth_tune.tune import adoption
from lth_tune.tune import trainable as trainable_mod
from lth_tune.tune.results import ResultsTable
from tests.tune.studies import COMPARED, sweep_process, write_study


@pytest.fixture
def experiment(tmp_path, data_root):
    study = load_study(write_study(tmp_path, data_root, "adopt", levels=2, epochs=1))
    return study.experiment


def lost_trial(exp_dir: Path, trial_id: str, run: IMPRun, steps: int) -> None:
    """A trial directory as Tune leaves it: one checkpoint_<i> per step taken (the newest holds the run's state)."""
    for i in range(steps):
        run.step()
        directory = exp_dir / f"trial_{trial_id}" / f"checkpoint_{i:06d}"
        directory.mkdir(parents=True)
        write_checkpoint(run.state_dict(), directory, run.CHECKPOINT_FILE)


def test_lost_checkpoints_by_identity_newest_and_most_advanced(tmp_path, experiment):
    exp = tmp_path / "exp"
    a, b = experiment.with_params({"train.lr": 0.01}), experiment.with_params({"train.lr": 0.1})
    lost_trial(exp, "a1", IMPRun(a, device="cpu"), 1)
    lost_trial(exp, "a2", IMPRun(a, device="cpu"), 2)  # the same grid point, further on: this one is adopted
    lost_trial(exp, "b1", IMPRun(b, device="cpu"), 2)
    lost_trial(exp, "known", IMPRun(b, device="cpu"), 3)  # Tune restores this one itself
    (exp / "trial_empty").mkdir()
    lost = adoption.lost_checkpoints(exp, {"known"}, [IMPRun.CHECKPOINT_FILE])
    key_a, key_b = adoption.identity(a.model_dump(mode="json")), adoption.identity(b.model_dump(mode="json"))
    assert set(lost) == {key_a, key_b}
    assert lost[key_a] == {"checkpoint": "trial_a2/checkpoint_000001", "file": IMPRun.CHECKPOINT_FILE, "steps": 2}
    assert lost[key_b]["checkpoint"] == "trial_b1/checkpoint_000001"
    adoption.write_adoptable(exp, lost)
    state = adoption.adoptable_state(exp, a.model_dump(mode="json"))
    assert state is not None and state["cursor"] == 2 and len(state["history"]) == 2
    other = experiment.with_params({"train.lr": 0.05}).model_dump(mode="json")
    assert adoption.adoptable_state(exp, other) is None  # no lost trial of that grid point
    assert adoption.adoptable_state(tmp_path / "fresh", other) is None  # no adoptable.json: a fresh sweep


def test_results_table_lists_adoptable_checkpoints_on_a_resumed_experiment(tmp_path, experiment):
    exp = tmp_path / "exp"
    cfg = experiment.with_params({"train.lr": 0.1})
    lost_trial(exp, "ghost", IMPRun(cfg, device="cpu"), 2)
    table = ResultsTable(exp)
    trial = SimpleNamespace(trial_id="ghost", config={"train.lr": 0.1})
    for level in (0, 1):
        table.on_trial_result(0, [trial], trial, {"level": level, "val_acc": 0.5})
    resumed = ResultsTable(exp)
    resumed.on_step_begin(0, [SimpleNamespace(trial_id="restored", status="RUNNING", checkpoint=object())])
    assert not (exp / "results.csv").exists()  # its rows come back under the new id
    assert adoption.adoptable_state(exp, cfg.model_dump(mode="json"))["cursor"] == 2


class FakeTune:
    """The parts of ``ray.tune`` a trainable calls, recording every report (checkpoint contents read at once)."""

    def __init__(self):
        self.reports: list[tuple[dict, bool]] = []

    @staticmethod
    def get_checkpoint():
        return None

    def report(self, metrics, checkpoint=None):
        self.reports.append((dict(metrics), checkpoint is not None and any(Path(checkpoint).iterdir())))

    class Checkpoint:
        @staticmethod
        def from_directory(d):
            return d


def test_adopting_trial_reports_the_lost_steps_then_continues_bit_for_bit(tmp_path, experiment, monkeypatch):
    cfg = experiment.with_params({"train.lr": 0.1, "regularizer.lam": 0.01})
    reference = IMPRun(cfg, device="cpu").run()
    exp = tmp_path / "exp"
    lost_trial(exp, "ghost", IMPRun(cfg, device="cpu"), 2)  # levels 0 and 1 done before the driver crashed
    adoption.write_adoptable(exp, adoption.lost_checkpoints(exp, set(), [IMPRun.CHECKPOINT_FILE]))
    fake = FakeTune()
    monkeypatch.setattr(trainable_mod, "tune", fake)
    base = experiment.model_dump(mode="json")
    trainable_mod.run_trainable({"train.lr": 0.1, "regularizer.lam": 0.01}, base=base, adopt=str(exp))
    levels = [m["level"] for m, _ in fake.reports]
    assert levels == [0, 1, 2]  # two adopted, one computed
    assert [c for _, c in fake.reports] == [False, True, True]  # the adopted state is checkpointed under the new id
    got = pd.DataFrame([m for m, _ in fake.reports])
    want = pd.DataFrame(reference)
    for col in COMPARED:
        assert (got[col].to_numpy() == want[col].to_numpy()).all(), col  # bit for bit
    lost = adoption.adoptable_state(exp, cfg.model_dump(mode="json"))["history"]
    assert list(got["time_s"][:2]) == [m["time_s"] for m in lost]  # reported, not recomputed
    assert math.isfinite(got["time_s"][2])


def test_without_a_lost_trial_the_trainable_starts_from_scratch(tmp_path, experiment, monkeypatch):
    fake = FakeTune()
    monkeypatch.setattr(trainable_mod, "tune", fake)
    trainable_mod.run_trainable({"train.lr": 0.1}, base=experiment.model_dump(mode="json"), adopt=str(tmp_path))
    assert [m["level"] for m, _ in fake.reports] == [0, 1, 2] and all(c for _, c in fake.reports)


@pytest.mark.e2e
def test_driver_kill_then_resume_adopts_every_checkpointed_level(tmp_path, data_root):
    """Tune saves its experiment state once, at the start (``TUNE_GLOBAL_CHECKPOINT_S`` huge; every level declared,
    so no checkpoint forces a save), with the first two trials and no checkpoint. The driver is killed while a later
    trial (unknown to that state) runs. On ``--resume`` every level that had been checkpointed is adopted — reported
    with the ``time_s`` it was computed with — not recomputed, and every row is there once, equal bit for bit to an
    uninterrupted run."""
    import os
    import subprocess
    import sys
    import time

    from lth_tune.runs import read_checkpoint
    from tests.tune.studies import assert_each_trial_matches_uninterrupted_run

    levels = 3
    space = {"train.lr": {"choice": [0.02, 0.05, 0.1]}, "regularizer.lam": {"choice": [0.0, 0.01]}}
    path = write_study(tmp_path, data_root, "adoptkill", space=space, levels=levels, epochs=40,
                       experiment={"controls": {"levels": "all"}})
    exp = tmp_path / "results" / "adoptkill"
    cmd = [sys.executable, "-m", "lth_tune.cli", "sweep", str(path), "-v", "0"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", TUNE_GLOBAL_CHECKPOINT_S="1000000")

    def steps_done(trial_dir: Path) -> int:
        return len(list(trial_dir.glob("checkpoint_*/imp_state.pt")))

    def first_two() -> list[str]:
        try:
            return list(pd.read_csv(exp / "trials.csv")["trial_id"][:2])
        except (FileNotFoundError, pd.errors.EmptyDataError, KeyError):
            return []

    with sweep_process(cmd, env):  # killed with the Ray cluster it started at the end of the block
        deadline = time.time() + 300
        while time.time() < deadline:
            known = first_two()
            later = [d for d in exp.glob("trial_*") if len(known) == 2 and d.name.removeprefix("trial_") not in known
                     and 1 <= steps_done(d) <= levels]
            if later:
                break
            time.sleep(0.1)
        else:
            pytest.fail("no third trial with a level done in time")
    done_before = {}  # (lr, lam, level) -> time_s of every level checkpointed before the kill
    for d in exp.glob("trial_*"):
        newest = sorted(d.glob("checkpoint_*/imp_state.pt"))
        if newest:
            state = read_checkpoint(newest[-1])
            c = state["config"]
            for m in state["history"]:
                done_before[(c["train"]["lr"], c["regularizer"]["lam"], m["level"])] = m["time_s"]
    assert len(done_before) < 6 * (levels + 1), "the kill came too late"

    resumed = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    df = pd.read_csv(exp / "results.csv")
    assert len(df) == 6 * (levels + 1) and df["trial_id"].nunique() == 6
    assert not df.duplicated(["trial_id", "level", "branch"]).any()
    assert set(pd.read_csv(exp / "trials.csv")["status"]) == {"TERMINATED"}
    adopted = 0
    for row in df.to_dict("records"):
        key = (row["config/train.lr"], row["config/regularizer.lam"], row["level"])
        if key in done_before:
            assert row["time_s"] == done_before[key], key  # the level computed before the kill, not again
            adopted += 1
    assert adopted == len(done_before) > 0
    assert_each_trial_matches_uninterrupted_run(df, path, list(space))


def test_a_state_that_does_not_load_is_not_adopted(tmp_path, experiment, monkeypatch):
    cfg = experiment.with_params({"train.lr": 0.1})
    run = IMPRun(cfg, device="cpu")
    run.step()
    state = run.state_dict()
    state["theta_init_digest"] = "0" * 64  # e.g. θ_init rebuilt differently on another torch version
    fake = FakeTune()
    monkeypatch.setattr(trainable_mod, "tune", fake)
    trainable_mod.run_resumable(IMPRun(cfg, device="cpu"), "val_acc", adopt=lambda: state)
    assert [m["level"] for m, _ in fake.reports] == [0, 1, 2]  # computed from scratch, every step once
