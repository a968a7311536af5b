"""Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020).

    θ_init ← init(seed);  m ← 1
    for level = 0, 1, …, L:
        if level > 0:
            m ← prune(θ_trained, m, fraction)        # paper 000 Table 2 criteria
            θ ← θ_rewind                             # initialisation, or iteration k of level 0
        θ_trained ← train(θ ⊙ m) with loss L_S(θ) + λ·R(θ)   # paper 000 eq. (1)
        report level metrics; checkpoint

One ``IMPRun.next_level()`` call is one level, which is one Ray Tune iteration. Everything random is
derived from ``(seed, level, purpose)``, so a run restored from the checkpoint of level ℓ produces
exactly the numbers an uninterrupted run produces from level ℓ+1 on. The optimiser is re-created at
every level (as in OpenLTH), so no optimiser state crosses a level boundary.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn

from lth_tune.config import ExperimentConfig, LevelSpec
from lth_tune.data import DataBundle
from lth_tune.pruning import attach_masks, density, prune_step, rewind, snapshot, trainable_parameters
from lth_tune.seeding import derived_seed, generator
from lth_tune.training import Regularizer, evaluate, make_stepper, train_epochs

from .metrics import flatness_metrics, ticket_bound_metrics
from .setup import init_model, load_experiment_data, resolve_device, uses_channels_last

__all__ = ["IMPRun", "build_experiment_model", "parameter_distance"]


def build_experiment_model(cfg: ExperimentConfig, data: DataBundle, device: torch.device) -> nn.Module:
    """The IMP network at initialisation: :func:`~lth_tune.runs.setup.init_model` with masks attached (all ones)."""
    model = init_model(cfg, data, device)
    attach_masks(model, ignore=cfg.pruning.ignore)
    if uses_channels_last(cfg, model):
        model = model.to(memory_format=torch.channels_last)
    return model


def parameter_distance(model: nn.Module, reference: dict[str, torch.Tensor] | None) -> float:
    """‖m ⊙ (θ − θ_ref)‖₂ over trainable parameters (``reference=None``: ‖m ⊙ θ‖₂)."""
    total = 0.0
    with torch.no_grad():
        for name, p, mask, _ in trainable_parameters(model):
            d = p if reference is None else p - reference[name]
            if mask is not None:
                d = d * mask
            total += d.pow(2).sum().item()
    return total**0.5


class IMPRun:
    """The IMP algorithm as a resumable object: ``next_level()`` → metrics; ``state_dict()`` → checkpoint."""

    CHECKPOINT_FILE = "imp_state.pt"

    def __init__(self, cfg: ExperimentConfig, device: torch.device | str | None = None, data: DataBundle | None = None):
        self.cfg = cfg
        self.device = torch.device(device) if device is not None else resolve_device(cfg.device)
        self.data = data if data is not None else load_experiment_data(cfg, self.device)
        self.model = build_experiment_model(cfg, self.data, self.device)
        self.theta_init = {t.name: t.param.detach().clone() for t in trainable_parameters(self.model)}
        # rewind point: the initialisation, or iteration k of level 0 (taken during training)
        self.rewind_snapshot = snapshot(self.model) if cfg.pruning.rewind_iteration == 0 else None
        self.level = 0  # the next level to run
        self.history: list[dict[str, float]] = []
        per_level = math.ceil(len(self.data.train) / cfg.train.batch_size) * cfg.train.epochs
        if cfg.pruning.rewind_iteration > per_level:
            raise ValueError(f"pruning.rewind_iteration={cfg.pruning.rewind_iteration} exceeds the {per_level} "
                             f"iterations of one level: lower it")

    @property
    def num_levels(self) -> int:
        return self.cfg.pruning.levels + 1

    @property
    def finished(self) -> bool:
        return self.level >= self.num_levels

    # ------------------------------------------------------------------ the algorithm
    def next_level(self) -> dict[str, float]:
        """Prune + rewind (levels > 0), train, measure. Returns this level's metrics."""
        if self.finished:
            raise RuntimeError("IMP run already finished")
        cfg, level, start = self.cfg, self.level, time.perf_counter()
        if level > 0:
            p = cfg.pruning
            prune_step(self.model, p.fraction, criterion=p.criterion, strategy=p.strategy,
                       generator=generator(cfg.seed, "prune", level))
            rewind(self.model, self.rewind_snapshot)
        self._train(level)
        metrics = self._measure(level)
        metrics["time_s"] = time.perf_counter() - start
        self.history.append(metrics)
        self.level += 1
        return metrics

    def run(self) -> list[dict[str, float]]:
        while not self.finished:
            self.next_level()
        return self.history

    # the Run protocol (lth_tune.runs.Run): one step = one IMP level
    step = next_level

    def position(self) -> dict[str, Any]:
        """Where the run stands (for a report that carries no metrics, e.g. a divergence)."""
        return {"level": self.level}

    def _train(self, level: int) -> None:
        t = self.cfg.train
        stepper = make_stepper(
            t.optimizer, self.model, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
            rho=t.rho, adaptive=t.adaptive, b=t.nvrm_b, generator=generator(self.cfg.seed, "nvrm", level),
        )
        reg = self.cfg.regularizer
        on_iteration = None
        if level == 0 and self.rewind_snapshot is None:
            k = self.cfg.pruning.rewind_iteration

            def on_iteration(i: int) -> None:
                if i == k:
                    self.rewind_snapshot = snapshot(self.model)

        train_epochs(
            self.model, self.data.train, stepper, epochs=t.epochs, batch_size=t.batch_size,
            milestones=t.milestones, gamma=t.gamma, generator=generator(self.cfg.seed, "order", level),
            augment=self.data.augment, regularizer=Regularizer(reg.kind, reg.lam, self.theta_init),
            on_iteration=on_iteration,
            autocast_dtype=torch.bfloat16 if t.precision == "bf16" else None,
            channels_last=uses_channels_last(self.cfg, self.model),
        )

    def _measure(self, level: int) -> dict[str, float]:
        m: dict[str, float] = {"level": level, "density": density(self.model)}
        m["sparsity"] = 1.0 - m["density"]
        for split in ("train", "val", "test"):
            loss, acc = evaluate(self.model, getattr(self.data, split))
            m[f"{split}_loss"], m[f"{split}_acc"] = loss, acc
        m["dist_init"] = parameter_distance(self.model, self.theta_init)
        m["weight_norm"] = parameter_distance(self.model, None)
        dense = self.history[0] if self.history else m
        m["test_acc_gap"] = dense["test_acc"] - m["test_acc"]
        m["val_acc_gap"] = dense["val_acc"] - m["val_acc"]
        if _selected(self.cfg.flatness.levels, level, self.num_levels):
            m.update(flatness_metrics(self.model, self.data, self.cfg.flatness,
                                      seed=derived_seed(self.cfg.seed, "flatness", level)))
        if _selected(self.cfg.bound.levels, level, self.num_levels):
            m.update(ticket_bound_metrics(self.model, self.theta_init, self.data, self.cfg.bound,
                                          seed=derived_seed(self.cfg.seed, "bound", level)))
        return m

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue (tensors and plain Python only: loads with weights_only=True)."""
        return {
            "level": self.level,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "theta_init": {k: v.cpu() for k, v in self.theta_init.items()},
            "rewind": None if self.rewind_snapshot is None else {k: v.cpu() for k, v in self.rewind_snapshot.items()},
            "history": list(self.history),
            "seed": self.cfg.seed,
            "config": self.cfg.model_dump(mode="json"),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["config"] != self.cfg.model_dump(mode="json"):
            raise ValueError("checkpoint was written by a different experiment configuration")
        self.model.load_state_dict({k: v.to(self.device) for k, v in state["model"].items()})
        self.theta_init = {k: v.to(self.device) for k, v in state["theta_init"].items()}
        self.rewind_snapshot = (
            None if state["rewind"] is None else {k: v.to(self.device) for k, v in state["rewind"].items()}
        )
        self.level = state["level"]
        self.history = list(state["history"])


def _selected(spec: LevelSpec, level: int, num_levels: int) -> bool:
    if spec == "none":
        return False
    if spec == "all":
        return True
    if spec == "last":
        return level == num_levels - 1
    return level in spec
