"""Flatness of one saved IMP ticket (``lth-tune flatness CHECKPOINT``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lth_tune.config import ExperimentConfig, StudyError


def load_ticket(checkpoint: str | Path, device: str | None = None):
    """Rebuild the ``IMPRun`` of a level checkpoint (config, data, weights, masks) from ``imp_state.pt``."""
    from lth_tune.imp import IMPRun
    from lth_tune.tune.trainable import CHECKPOINT_FILE

    path = Path(checkpoint)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise StudyError(f"checkpoint: {path} not found (give a trial_*/checkpoint_* directory)")
    state = torch.load(path, weights_only=True, map_location="cpu")
    cfg = ExperimentConfig.model_validate(state["config"])
    run = IMPRun(cfg, device=device)
    run.load_state_dict(state)
    return run


def flatness_of_checkpoint(checkpoint: str | Path, *, out: str | Path | None = None, method: str | None = None,
                           landscape: bool = True, sharpness_sigma: float | None = None) -> dict[str, Any]:
    from lth_tune.flatness.imp import flatness_metrics

    run = load_ticket(checkpoint)
    out = Path(out) if out else (Path(checkpoint) if Path(checkpoint).is_dir() else Path(checkpoint).parent) / "flatness"
    out.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, Any] = {"landscape": landscape, "artefacts_dir": str(out)}
    if method:
        overrides["method"] = method
    if sharpness_sigma is not None:
        overrides["sharpness_sigma"] = sharpness_sigma
    cfg = run.cfg.flatness
    metrics = flatness_metrics(run.model, run.data, cfg, **overrides)
    metrics.update(level=run.level - 1, density=run.history[-1]["density"] if run.history else 1.0)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
