"""The Ray Tune function trainable: a runner (:mod:`lth_tune.runs`) stepped, reported and checkpointed.

A step is one runner step: one IMP level for ``experiment.kind: imp`` (level 0 = dense network), one PBP/PFT
stage for ``kind: pbp``. One Tune iteration reports one step, or the steps since the last report when
``search.report_every_s`` holds them (:func:`steps_of` reads a result either way). Checkpoints of the complete run
state go with the reports (every one by default; ``search.checkpoint_every_s``), so a retried or restored trial
continues after its last checkpoint and reproduces the numbers of an uninterrupted run.
A trial of a resumed sweep that Tune starts afresh first looks for the checkpoint of a trial with its identity that
the crashed driver lost (:mod:`lth_tune.tune.adoption`) and continues from there.

A trial whose training loss becomes NaN/inf (``DivergedError``) reports one last result carrying
``diverged`` (the reason, no checkpoint) and then fails; the driver callback ``NoRetryOnDivergence`` sees
that result first and turns off the trial's retries, because a retry from the last checkpoint would
diverge again at the same step. Node failures and other errors are still retried (``search.max_failures``).
"""

from __future__ import annotations

import functools
import logging
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from ray import tune

from lth_tune.config import ExperimentConfig
from lth_tune.runs import RUNS, Run, read_checkpoint, write_checkpoint
from lth_tune.training import DivergedError

logger = logging.getLogger(__name__)

#: Result key of the last result of a diverged trial: the DivergedError message.
DIVERGED = "diverged"
#: Result key of a report that carries several steps (``search.report_every_s``): the metrics of the steps before
#: the last, in order; the result's own metrics are the last step's. Read a result with :func:`steps_of`.
EARLIER_STEPS = "earlier_steps"
#: Result key ranking checkpoints for retention (``CheckpointConfig.checkpoint_score_attribute``): steps the
#: runner declares worth keeping (``Run.worth_keeping``) rank above every other; among the rest the latest wins.
CHECKPOINT_SCORE = "checkpoint_score"
KEEP = 1_000_000


def trial_config(base: dict[str, Any], params: dict[str, Any], encoded: dict[str, list] | None = None) -> ExperimentConfig:
    """The trial's experiment: the study's experiment with the searched grid values substituted.

    Grid values that are not scalars (e.g. a list of widths) travel through Optuna as their index in
    ``encoded[key]``.
    """
    encoded = encoded or {}
    decoded = {k: (encoded[k][v] if k in encoded else v) for k, v in params.items()}
    return ExperimentConfig.model_validate(base).with_params(decoded)


def configure_torch(threads: int, gpu_fraction: float = 0.0) -> None:
    """One torch thread per trial unless configured; cap this process's share of a packed GPU."""
    torch.set_num_threads(threads)
    if 0 < gpu_fraction < 1 and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(gpu_fraction)


def run_resumable(run: Run, metric: str, adopt: Callable[[], dict[str, Any] | None] | None = None,
                  checkpoint_every_s: float = 0.0, report_every_s: float = 0.0) -> None:
    """Restore ``run`` from the trial's latest checkpoint, then ``run.step()`` until ``run.finished``, reporting the
    steps, with a checkpoint when ``checkpoint_every_s`` seconds passed since the last one (0: every step), when the
    runner marks the step worth keeping, and after the last step. A report without a checkpoint saves its round trip
    to the driver and the checkpoint's write and copy (≈8 ms for the main job's MLP, against levels of ≈0.6 s); a
    retried trial continues after its last checkpoint and reports the steps after it again, with the same numbers
    (the results table keeps one row per step).

    Steps are reported as they finish when ``report_every_s`` is 0; otherwise a report waits until that many seconds
    passed since the last one (or a checkpoint is due) and carries every step since (:data:`EARLIER_STEPS`): each
    report is a round trip to the driver (≈4 ms here) while the trial waits. A step not yet reported when the trial
    is lost is recomputed from the last checkpoint, like a reported one.

    Without a checkpoint of its own, ``adopt()`` (given on a resumed sweep) may return the state of a lost trial
    of the same configuration (:mod:`lth_tune.tune.adoption`): the run loads it, reports its history again (the
    last step with a checkpoint) and continues after it.

    A ``DivergedError`` is reported with its reason (``run.position()`` says where) and re-raised, so the
    trial ends as errored; every report carries the study ``metric`` (nan where a step has none).
    """
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            run.load_state_dict(read_checkpoint(Path(d) / run.CHECKPOINT_FILE))
    elif adopt is not None and (state := adopt()) is not None:
        try:
            run.load_state_dict(state)  # checks the configuration and θ_init before it changes anything
        except ValueError as err:
            logger.warning("not adopting the lost trial's checkpoint (%s): starting from scratch", err)
        else:
            for i, metrics in enumerate(run.history):  # the lost trial's steps, under this trial's id
                _report(run, [metrics], metric, checkpoint=i == len(run.history) - 1)
    last_checkpoint = last_report = time.monotonic()
    unreported: list[dict[str, Any]] = []
    while not run.finished:
        try:
            unreported.append(run.step())
        except DivergedError as err:
            if unreported:
                _report(run, unreported, metric, checkpoint=False)
            tune.report({**run.position(), DIVERGED: str(err), metric: float("nan")})
            raise
        now = time.monotonic()
        checkpoint = now - last_checkpoint >= checkpoint_every_s or run.finished or run.worth_keeping()
        if checkpoint or now - last_report >= report_every_s:
            _report(run, unreported, metric, checkpoint=checkpoint)
            unreported = []
            last_report = now
            if checkpoint:
                last_checkpoint = time.monotonic()


def _report(run: Run, steps: list[dict[str, Any]], metric: str, *, checkpoint: bool) -> None:
    """``tune.report`` the metrics of ``steps`` (the last one's as the result, the others under
    :data:`EARLIER_STEPS`), with a checkpoint of the run as it stands now."""
    steps = [{**s, metric: s.get(metric, math.nan)} for s in steps]
    metrics = dict(steps[-1])
    if len(steps) > 1:
        metrics[EARLIER_STEPS] = steps[:-1]
    if not checkpoint:
        tune.report(metrics)
        return
    metrics[CHECKPOINT_SCORE] = len(run.history) + (KEEP if run.worth_keeping() else 0)
    with tempfile.TemporaryDirectory() as d:
        write_checkpoint(run.state_dict(), d, run.CHECKPOINT_FILE)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def steps_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The steps a Tune result reports, in order: those a batched report carries (:data:`EARLIER_STEPS`), then the
    result itself (with Tune's bookkeeping keys, which are not metrics)."""
    return [*result.get(EARLIER_STEPS, ()), result]


def run_trainable(config: dict[str, Any], *, base: dict[str, Any], encoded: dict | None = None,
                  threads: int = 1, gpu_fraction: float = 0.0, metric: str = "val_acc", adopt: str | None = None,
                  checkpoint_every_s: float = 0.0, report_every_s: float = 0.0) -> None:
    """One trial: the runner of ``experiment.kind`` (IMP or PBP) for the trial's configuration; ``adopt``: where a
    resumed sweep lists the checkpoints of lost trials (:mod:`lth_tune.tune.adoption`); ``checkpoint_every_s``,
    ``report_every_s``: ``search.checkpoint_every_s``, ``search.report_every_s``."""
    configure_torch(threads, gpu_fraction)
    cfg = trial_config(base, config, encoded)
    adopted = None
    if adopt is not None:
        from lth_tune.tune.adoption import adoptable_state

        adopted = functools.partial(adoptable_state, adopt, cfg.model_dump(mode="json"))
    run_resumable(RUNS[cfg.kind](cfg), metric, adopted, checkpoint_every_s, report_every_s)


class NoRetryOnDivergence(tune.Callback):
    """Driver callback: a diverged trial ends as ERROR at once instead of being retried from its checkpoint."""

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get(DIVERGED):
            trial.max_failures = 0
