"""The Ray Tune function trainable: a runner (:mod:`lth_tune.runs`) stepped, reported and checkpointed.

One Tune iteration is one runner step: one IMP level for ``experiment.kind: imp`` (level 0 = dense
network), one PBP/PFT stage for ``kind: pbp``. Every report carries a checkpoint of the complete run state,
so a retried or restored trial continues at the next step and reproduces the numbers of an uninterrupted run.

A trial whose training loss becomes NaN/inf (``DivergedError``) reports one last result carrying
``diverged`` (the reason, no checkpoint) and then fails; the driver callback ``NoRetryOnDivergence`` sees
that result first and turns off the trial's retries, because a retry from the last checkpoint would
diverge again at the same step. Node failures and other errors are still retried (``search.max_failures``).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import torch
from ray import tune

from lth_tune.config import ExperimentConfig
from lth_tune.runs import RUNS, Run, read_checkpoint, write_checkpoint
from lth_tune.training import DivergedError

#: Result key of the last result of a diverged trial: the DivergedError message.
DIVERGED = "diverged"
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


def run_resumable(run: Run, metric: str) -> None:
    """Restore ``run`` from the trial's latest checkpoint, then ``run.step()`` until ``run.finished``,
    reporting + checkpointing after every step.

    A ``DivergedError`` is reported with its reason (``run.position()`` says where) and re-raised, so the
    trial ends as errored; every report carries the study ``metric`` (nan where a step has none).
    """
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            run.load_state_dict(read_checkpoint(Path(d) / run.CHECKPOINT_FILE))
    while not run.finished:
        try:
            metrics = dict(run.step())
        except DivergedError as err:
            tune.report({**run.position(), DIVERGED: str(err), metric: float("nan")})
            raise
        metrics.setdefault(metric, math.nan)
        metrics[CHECKPOINT_SCORE] = len(run.history) + (KEEP if run.worth_keeping() else 0)
        with tempfile.TemporaryDirectory() as d:
            write_checkpoint(run.state_dict(), d, run.CHECKPOINT_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def run_trainable(config: dict[str, Any], *, base: dict[str, Any], encoded: dict | None = None,
                  threads: int = 1, gpu_fraction: float = 0.0, metric: str = "val_acc") -> None:
    """One trial: the runner of ``experiment.kind`` (IMP or PBP) for the trial's configuration."""
    configure_torch(threads, gpu_fraction)
    cfg = trial_config(base, config, encoded)
    run_resumable(RUNS[cfg.kind](cfg), metric)


class NoRetryOnDivergence(tune.Callback):
    """Driver callback: a diverged trial ends as ERROR at once instead of being retried from its checkpoint."""

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get(DIVERGED):
            trial.max_failures = 0
