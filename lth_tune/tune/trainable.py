"""Ray Tune function trainables.

``imp_trainable``: one ``tune.report`` per IMP level (level 0 = dense network), each with a checkpoint
holding the complete ``IMPRun`` state, so a retried or restored trial continues at the next level and
reproduces the numbers of an uninterrupted run.

A trial whose training loss becomes NaN/inf (``DivergedError``) reports one last result carrying
``diverged`` (the reason, no checkpoint) and then fails; the driver callback ``NoRetryOnDivergence`` sees
that result first and turns off the trial's retries, because a retry from the last checkpoint would
diverge again at the same level. Node failures and other errors are still retried (``search.max_failures``).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from ray import tune

from lth_tune.config import ExperimentConfig

CHECKPOINT_FILE = "imp_state.pt"
#: Result key of the last result of a diverged trial: the DivergedError message.
DIVERGED = "diverged"


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


def run_resumable(run, step: Callable[[], dict], checkpoint_file: str, metric: str,
                  position: Callable[[], dict]) -> None:
    """Restore ``run`` from the trial's latest checkpoint, then ``step()`` until ``run.finished``,
    reporting + checkpointing after every step (one Tune iteration = one IMP level / one PBP stage).

    A ``DivergedError`` is reported with its reason (``position()`` says where) and re-raised, so the trial
    ends as errored; every report carries the study ``metric`` (nan where a step has none).
    """
    from lth_tune.training.loop import DivergedError

    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            run.load_state_dict(torch.load(Path(d) / checkpoint_file, weights_only=True))
    while not run.finished:
        try:
            metrics = dict(step())
        except DivergedError as err:
            tune.report({**position(), DIVERGED: str(err), metric: float("nan")})
            raise
        metrics.setdefault(metric, math.nan)
        with tempfile.TemporaryDirectory() as d:
            torch.save(run.state_dict(), os.path.join(d, checkpoint_file))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def imp_trainable(config: dict[str, Any], *, base: dict[str, Any], encoded: dict | None = None,
                  threads: int = 1, gpu_fraction: float = 0.0, metric: str = "val_acc") -> None:
    """IMP as a Tune trainable: report + checkpoint after every level."""
    from lth_tune.imp import IMPRun

    configure_torch(threads, gpu_fraction)
    run = IMPRun(trial_config(base, config, encoded))
    run_resumable(run, run.next_level, CHECKPOINT_FILE, metric, lambda: {"level": run.level})


class NoRetryOnDivergence(tune.Callback):
    """Driver callback: a diverged trial ends as ERROR at once instead of being retried from its checkpoint."""

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get(DIVERGED):
            trial.max_failures = 0
