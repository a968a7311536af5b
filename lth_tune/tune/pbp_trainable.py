"""Ray Tune function trainable for PAC-Bayes pruning / probabilistic fine-tuning (paper 004).

``pbp_trainable``: one ``tune.report`` per stage (``level`` = stage − 1: 0 prior pre-training, 1 stochastic
prior fine-tuning, 2 posterior / PFT fine-tuning), each with a checkpoint of the complete ``PBPRun`` state, so
a retried or restored trial continues at the next stage and reproduces the numbers of an uninterrupted run.
Every report carries the study metric (``nan`` where a stage has none, e.g. ``bound`` after stage 1).
Divergence is handled as in :func:`lth_tune.tune.trainable.imp_trainable`.
"""

from __future__ import annotations

from typing import Any

from lth_tune.tune.trainable import configure_torch, run_resumable, trial_config

CHECKPOINT_FILE = "pbp_state.pt"


def pbp_trainable(config: dict[str, Any], *, base: dict[str, Any], encoded: dict | None = None,
                  threads: int = 1, gpu_fraction: float = 0.0, metric: str = "bound") -> None:
    """PBP / PFT as a Tune trainable: report + checkpoint after every stage."""
    from lth_tune.pacbayes.pbp import PBPRun

    configure_torch(threads, gpu_fraction)
    run = PBPRun(trial_config(base, config, encoded))
    run_resumable(run, run.next_stage, CHECKPOINT_FILE, metric,
                  lambda: {"level": run.stage - 1, "stage": run.stage})
