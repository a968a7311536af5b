"""Ray Tune function trainable for PAC-Bayes pruning / probabilistic fine-tuning (paper 004).

``pbp_trainable``: one ``tune.report`` per stage (``level`` = stage − 1: 0 prior pre-training, 1 stochastic
prior fine-tuning, 2 posterior / PFT fine-tuning), each with a checkpoint of the complete ``PBPRun`` state, so
a retried or restored trial continues at the next stage and reproduces the numbers of an uninterrupted run.
Every report carries the study metric (``nan`` where a stage has none, e.g. ``bound`` after stage 1).
Divergence is handled as in :func:`lth_tune.tune.trainable.imp_trainable`.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from ray import tune

from lth_tune.tune.trainable import DIVERGED, configure_torch, trial_config

CHECKPOINT_FILE = "pbp_state.pt"


def pbp_trainable(config: dict[str, Any], *, base: dict[str, Any], encoded: dict | None = None,
                  threads: int = 1, gpu_fraction: float = 0.0, metric: str = "bound") -> None:
    """PBP / PFT as a Tune trainable: report + checkpoint after every stage."""
    from lth_tune.pacbayes.pbp import PBPRun
    from lth_tune.training.loop import DivergedError

    configure_torch(threads, gpu_fraction)
    cfg = trial_config(base, config, encoded)
    run = PBPRun(cfg)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            run.load_state_dict(torch.load(Path(d) / CHECKPOINT_FILE, weights_only=True))
    while not run.finished:
        try:
            metrics = run.next_stage()
        except DivergedError as err:
            tune.report({"level": run.stage - 1, "stage": run.stage, DIVERGED: str(err), metric: float("nan")})
            raise
        metrics = dict(metrics)
        metrics.setdefault(metric, math.nan)
        with tempfile.TemporaryDirectory() as d:
            torch.save(run.state_dict(), os.path.join(d, CHECKPOINT_FILE))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
