"""The trainable's checkpoint cadence (``search.checkpoint_every_s``): which steps carry a checkpoint, and a trial
resumed from a sparse checkpoint reproducing the uninterrupted run."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from lth_tune.config import load_study
from lth_tune.runs import IMPRun, read_checkpoint
from lth_tune.tune import trainable as trainable_mod
from tests.tune.studies import write_study


class RecordingTune:
    """The parts of ``ray.tune`` a trainable calls; keeps every report and the state of each checkpoint."""

    def __init__(self, resume_from: dict | None = None):
        self.reports: list[tuple[dict, dict | None]] = []
        self.resume_from = resume_from

    def get_checkpoint(self):
        return None if self.resume_from is None else _Stored(self.resume_from)

    def report(self, metrics, checkpoint=None):
        state = read_checkpoint(Path(checkpoint) / IMPRun.CHECKPOINT_FILE) if checkpoint is not None else None
        self.reports.append((dict(metrics), state))

    class Checkpoint:
        @staticmethod
        def from_directory(d):
            return d


class _Stored:
    """A checkpoint Tune hands back to a retried trial: written to a directory on ``as_directory``."""

    def __init__(self, state: dict):
        self.state = state

    def as_directory(self):
        import contextlib
        import tempfile

        from lth_tune.runs import write_checkpoint

        @contextlib.contextmanager
        def directory():
            with tempfile.TemporaryDirectory() as d:
                write_checkpoint(self.state, d, IMPRun.CHECKPOINT_FILE)
                yield d

        return directory()


class FakeClock:
    """``time`` for the trainable: every reading is ``tick`` seconds after the previous one."""

    def __init__(self, tick: float):
        self._times = itertools.count(0.0, tick)

    def monotonic(self) -> float:
        return next(self._times)


@pytest.fixture
def experiment(tmp_path, data_root):
    return load_study(write_study(tmp_path, data_root, "cadence", levels=3, epochs=1)).experiment.with_params(
        {"train.lr": 0.1})


def _numbers(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "time_s" and not (isinstance(v, float) and math.isnan(v))}


def test_every_step_is_checkpointed_by_default(experiment, monkeypatch):
    fake = RecordingTune()
    monkeypatch.setattr(trainable_mod, "tune", fake)
    trainable_mod.run_resumable(IMPRun(experiment, device="cpu"), "val_acc")
    assert [m["level"] for m, _ in fake.reports] == [0, 1, 2, 3]
    assert all(state is not None for _, state in fake.reports)


def test_sparse_checkpoints_and_a_retry_from_one_gives_the_same_numbers(experiment, monkeypatch):
    # Each clock reading is 6 s after the previous one: the start (0), then one reading after every step and one
    # after every checkpoint; with checkpoint_every_s=10 the steps checkpoint as: 6 no, 12 yes (then 18), 24 no,
    # 30 yes, which is also the last step (always checkpointed).
    fake = RecordingTune()
    monkeypatch.setattr(trainable_mod, "tune", fake)
    monkeypatch.setattr(trainable_mod, "time", FakeClock(6.0))
    trainable_mod.run_resumable(IMPRun(experiment, device="cpu"), "val_acc", checkpoint_every_s=10.0)
    assert [(m["level"], state is not None) for m, state in fake.reports] == [
        (0, False), (1, True), (2, False), (3, True)]
    assert [trainable_mod.CHECKPOINT_SCORE in m for m, _ in fake.reports] == [False, True, False, True]

    # The trial dies after level 2 (reported without a checkpoint): Tune retries it from level 1's checkpoint, and
    # it reports level 2 again and then level 3, with the numbers of the uninterrupted run.
    retry = RecordingTune(resume_from=fake.reports[1][1])
    monkeypatch.setattr(trainable_mod, "tune", retry)
    trainable_mod.run_resumable(IMPRun(experiment, device="cpu"), "val_acc", checkpoint_every_s=10.0)
    assert [m["level"] for m, _ in retry.reports] == [2, 3]
    for (again, _), (first, _) in zip(retry.reports, fake.reports[2:]):
        assert _numbers(again) == _numbers(first)


def test_steps_worth_keeping_are_checkpointed_whatever_the_interval(tmp_path, data_root, monkeypatch):
    study = load_study(write_study(tmp_path, data_root, "kept", levels=3, epochs=1,
                                   experiment={"instability": {"levels": [1], "points": 3}}))
    cfg = study.experiment.with_params({"train.lr": 0.1})
    fake = RecordingTune()
    monkeypatch.setattr(trainable_mod, "tune", fake)
    trainable_mod.run_resumable(IMPRun(cfg, device="cpu"), "val_acc", checkpoint_every_s=1e9)
    assert [(m["level"], state is not None) for m, state in fake.reports] == [
        (0, False), (1, True), (2, False), (3, True)]


def test_batched_reports_carry_every_step_with_the_numbers_of_one_report_per_step(experiment, monkeypatch):
    # Clock readings 6 s apart: the start (0), one after every step and one after every checkpoint. With
    # report_every_s=10 and no checkpoint due before the last step: level 0 at 6 waits, level 1 at 12 is reported
    # with it, level 2 at 18 waits, level 3 at 24 is the last (checkpointed) and is reported with level 2.
    batched = RecordingTune()
    monkeypatch.setattr(trainable_mod, "tune", batched)
    monkeypatch.setattr(trainable_mod, "time", FakeClock(6.0))
    trainable_mod.run_resumable(IMPRun(experiment, device="cpu"), "val_acc", checkpoint_every_s=1e9,
                                report_every_s=10.0)
    assert [([s["level"] for s in trainable_mod.steps_of(m)], state is not None) for m, state in batched.reports] == [
        ([0, 1], False), ([2, 3], True)]
    assert trainable_mod.EARLIER_STEPS not in batched.reports[1][1]  # the checkpoint holds the run, not the report

    each = RecordingTune()
    monkeypatch.setattr(trainable_mod, "tune", each)
    trainable_mod.run_resumable(IMPRun(experiment, device="cpu"), "val_acc", checkpoint_every_s=1e9)
    assert [m["level"] for m, _ in each.reports] == [0, 1, 2, 3]
    steps = [s for m, _ in batched.reports for s in trainable_mod.steps_of(m)]
    assert [_numbers({k: v for k, v in s.items() if k != trainable_mod.EARLIER_STEPS}) for s in steps] == [
        _numbers(m) for m, _ in each.reports]


class DivergingRun:
    """A runner whose third step diverges."""

    CHECKPOINT_FILE = IMPRun.CHECKPOINT_FILE

    def __init__(self):
        self.history: list[dict] = []

    @property
    def finished(self) -> bool:
        return False

    def step(self) -> dict:
        from lth_tune.training import DivergedError

        if len(self.history) == 2:
            raise DivergedError("training loss is nan in epoch 1")
        self.history.append({"level": len(self.history), "branch": "ticket", "val_acc": 0.5})
        return self.history[-1]

    def worth_keeping(self) -> bool:
        return False

    def position(self) -> dict:
        return {"level": len(self.history), "branch": "ticket"}


def test_steps_waiting_for_a_report_are_reported_before_a_divergence(monkeypatch):
    fake = RecordingTune()
    monkeypatch.setattr(trainable_mod, "tune", fake)
    from lth_tune.training import DivergedError

    with pytest.raises(DivergedError):
        trainable_mod.run_resumable(DivergingRun(), "val_acc", checkpoint_every_s=1e9, report_every_s=1e9)
    assert [[s["level"] for s in trainable_mod.steps_of(m)] for m, _ in fake.reports] == [[0, 1], [2]]
    assert [trainable_mod.DIVERGED in m for m, _ in fake.reports] == [False, True]
