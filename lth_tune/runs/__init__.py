"""Runners: the algorithms of the two papers as resumable objects, one step at a time.

* :class:`IMPRun` — iterative magnitude pruning with rewinding (paper 000; one step = one IMP level);
* :class:`PBPRun` — PAC-Bayes pruning / probabilistic fine-tuning (paper 004; one step = one stage).

Every runner follows the :class:`Run` protocol, which is all the Ray edge (``lth_tune.tune``) knows: build it
from an :class:`~lth_tune.config.ExperimentConfig`, ``step()`` until ``finished``, ``state_dict()`` after
each step (a checkpoint that loads with ``torch.load(weights_only=True)``), ``load_state_dict()`` to resume.
Runners are the only code (with the CLI) that reads configs; ``setup`` holds what they share and
``metrics`` the adapters from configs to the flatness and PAC-Bayes mathematics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from lth_tune.config import ExperimentConfig, StudyError

from .imp import IMPRun
from .pbp import PBPRun
from .setup import read_checkpoint, write_checkpoint

__all__ = ["RUNS", "IMPRun", "PBPRun", "Run", "checkpoints_to_keep", "read_checkpoint", "restore_run",
           "write_checkpoint"]


class Run(Protocol):
    """What a runner offers the Ray edge."""

    CHECKPOINT_FILE: str
    history: list[dict[str, Any]]

    def __init__(self, cfg: ExperimentConfig, device: torch.device | str | None = None) -> None: ...

    @property
    def finished(self) -> bool: ...

    def step(self) -> dict[str, Any]: ...

    def position(self) -> dict[str, Any]: ...

    def worth_keeping(self) -> bool: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


#: ``experiment.kind`` → runner class.
RUNS: dict[str, type[IMPRun | PBPRun]] = {"imp": IMPRun, "pbp": PBPRun}


def checkpoints_to_keep(cfg: ExperimentConfig) -> int:
    """How many of a trial's checkpoints :meth:`Run.worth_keeping` marks (the latest is kept besides)."""
    if cfg.kind == "pbp":
        return 0
    return IMPRun.levels_worth_keeping(cfg)


def restore_run(checkpoint: str | Path, device: str | torch.device | None = None) -> IMPRun | PBPRun:
    """Rebuild a run (config, data, weights, masks) from a level checkpoint directory or its state file."""
    path = Path(checkpoint)
    if path.is_dir():
        found = [path / cls.CHECKPOINT_FILE for cls in RUNS.values() if (path / cls.CHECKPOINT_FILE).is_file()]
        if not found:
            raise StudyError(f"checkpoint: {path} holds no run state (give a trial_*/checkpoint_* directory)")
        path = found[0]
    if not path.is_file():
        raise StudyError(f"checkpoint: {path} not found (give a trial_*/checkpoint_* directory)")
    state = read_checkpoint(path)
    cfg = ExperimentConfig.model_validate(state["config"])
    run = RUNS[cfg.kind](cfg, device=device)
    run.load_state_dict(state)
    return run
