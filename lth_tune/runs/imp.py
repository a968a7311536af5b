"""Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020), with the
lottery-ticket controls and the instability analysis.

    θ_init ← init(seed);  m ← 1
    for level = 0, 1, …, L:
        if level > 0:
            m ← prune(θ_trained, m, fraction)        # paper 000 Table 2 criteria
            θ ← θ_rewind                             # initialisation, or iteration k of level 0
        θ_trained ← train(θ ⊙ m) with loss L_S(θ) + λ·R(θ)   # paper 000 eq. (1)
        report level metrics; checkpoint

Controls (``experiment.controls``), at a declared level before the ticket trains, each one more training:

    reinit:        m ⊙ θ'_init,  θ'_init a fresh initialisation            (is the initialisation special?)
    random_prune:  m' ⊙ θ_rewind, m' random with m's per-layer density       (is the mask special?)

Instability (``experiment.instability``), at a declared level after the ticket trains: a second copy from
the same starting point with another data order; the error barrier between the two (linear mode
connectivity, Frankle et al. 2020) and along the line from the starting point to the ticket.

One ``step()`` is one ticket level or one control (one Ray Tune iteration each, rows told apart by
``branch``); ``next_level()`` runs a level's pending controls and then the level. Everything random is
derived from ``(seed, purpose, level)`` (:mod:`lth_tune.seeding`), so a run restored from the checkpoint
of any step produces exactly the numbers an uninterrupted run produces from the next step on. The optimiser
is re-created for every training (as in OpenLTH), so no optimiser state crosses a step boundary.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import torch
from torch import nn

from lth_tune.config import ExperimentConfig, LevelSpec
from lth_tune.data import DataBundle
from lth_tune.flatness import error_barrier, linear_path_errors
from lth_tune.pruning import (
    attach_masks,
    copy_model,
    density,
    load_mask_state,
    mask_state,
    prune_step,
    random_masks_like,
    rewind,
    snapshot,
    trainable_parameters,
)
from lth_tune.seeding import derived_seed, generator
from lth_tune.training import Regularizer, evaluate, make_stepper, train_epochs

from .metrics import flatness_metrics, ticket_bound_metrics
from .setup import init_model, load_experiment_data, resolve_device, tensor_digest, uses_channels_last

__all__ = ["IMPRun", "build_experiment_model", "parameter_distance"]


def build_experiment_model(cfg: ExperimentConfig, data: DataBundle, device: torch.device,
                           purpose: tuple[Any, ...] = ("init",)) -> nn.Module:
    """The IMP network at initialisation: :func:`~lth_tune.runs.setup.init_model` with masks attached (all ones)."""
    model = init_model(cfg, data, device, purpose=purpose)
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


TICKET = "ticket"


class IMPRun:
    """The IMP algorithm as a resumable object: ``step()`` → metrics of one level or control;
    ``state_dict()`` → checkpoint."""

    CHECKPOINT_FILE = "imp_state.pt"

    def __init__(self, cfg: ExperimentConfig, device: torch.device | str | None = None, data: DataBundle | None = None):
        self.cfg = cfg
        self.device = torch.device(device) if device is not None else resolve_device(cfg.device)
        self.data = data if data is not None else load_experiment_data(cfg, self.device)
        self.model = build_experiment_model(cfg, self.data, self.device)
        self.theta_init = {t.name: t.param.detach().clone() for t in trainable_parameters(self.model)}
        # rewind point: the initialisation, or iteration k of level 0 (taken during training)
        self.rewind_snapshot = snapshot(self.model) if cfg.pruning.rewind_iteration == 0 else None
        self.level = 0  # the next ticket level to run
        self.plan = self._plan()  # every step: (level, branch)
        self.cursor = 0  # the next step
        self.history: list[dict[str, Any]] = []
        per_level = math.ceil(len(self.data.train) / cfg.train.batch_size) * cfg.train.epochs
        if cfg.pruning.rewind_iteration > per_level:
            raise ValueError(f"pruning.rewind_iteration={cfg.pruning.rewind_iteration} exceeds the {per_level} "
                             f"iterations of one level: lower it")

    @property
    def num_levels(self) -> int:
        return self.cfg.pruning.levels + 1

    @property
    def finished(self) -> bool:
        return self.cursor >= len(self.plan)

    def _plan(self) -> list[tuple[int, str]]:
        c = self.cfg.controls
        steps = []
        for level in range(self.num_levels):
            if level > 0 and _selected(c.levels, level, self.num_levels):
                steps += [(level, kind) for kind in c.kinds]
            steps.append((level, TICKET))
        return steps

    # ------------------------------------------------------------------ the algorithm
    def step(self) -> dict[str, Any]:
        """The next step of the plan (the Run protocol): a control, or the next ticket level."""
        if self.finished:
            raise RuntimeError("IMP run already finished")
        level, branch = self.plan[self.cursor]
        metrics = self._ticket_level() if branch == TICKET else self._control(branch, level)
        self.history.append(metrics)
        self.cursor += 1
        return metrics

    def next_level(self) -> dict[str, Any]:
        """Run the next level's pending controls, then the level itself; returns the level's metrics."""
        while True:
            metrics = self.step()
            if metrics["branch"] == TICKET:
                return metrics

    def run(self) -> list[dict[str, Any]]:
        while not self.finished:
            self.step()
        return self.history

    def position(self) -> dict[str, Any]:
        """Where the run stands (for a report that carries no metrics, e.g. a divergence)."""
        level, branch = self.plan[min(self.cursor, len(self.plan) - 1)]
        return {"level": level, "branch": branch}

    def _ticket_level(self) -> dict[str, Any]:
        """Prune + rewind (levels > 0), train, measure: one level of IMP."""
        cfg, level, start = self.cfg, self.level, time.perf_counter()
        if level > 0:
            p = cfg.pruning
            prune_step(self.model, p.fraction, criterion=p.criterion, strategy=p.strategy,
                       generator=generator(cfg.seed, "prune", level))
            rewind(self.model, self.rewind_snapshot)
        start_point = snapshot(self.model) if self._selected(cfg.instability.levels, level) else None
        self._train(self.model, self.theta_init, level)
        metrics = self._measure(self.model, self.theta_init, level, TICKET)
        if _selected(cfg.flatness.levels, level, self.num_levels):
            metrics.update(flatness_metrics(self.model, self.data, cfg.flatness,
                                            seed=derived_seed(cfg.seed, "flatness", level)))
        if _selected(cfg.bound.levels, level, self.num_levels):
            metrics.update(ticket_bound_metrics(self.model, self.theta_init, self.data, cfg.bound,
                                                seed=derived_seed(cfg.seed, "bound", level)))
        if start_point is not None:
            metrics.update(self._instability(level, start_point))
        metrics["time_s"] = time.perf_counter() - start
        self.level += 1
        return metrics

    def _control(self, kind: str, level: int) -> dict[str, Any]:
        """A lottery-ticket control at ``level``, trained exactly like the ticket (same schedule and data
        order), leaving the ticket's own state untouched."""
        start = time.perf_counter()
        mask = self._mask_at(level)
        if kind == "reinit":  # the ticket's mask on a fresh initialisation
            model = build_experiment_model(self.cfg, self.data, self.device, purpose=("init", "reinit", level))
            load_mask_state(model, mask)
        else:  # random_prune: a random mask with the same per-layer density, from the ticket's rewind point
            model = build_experiment_model(self.cfg, self.data, self.device)
            load_mask_state(model, random_masks_like(mask, generator(self.cfg.seed, "random_prune", level)))
            rewind(model, self.rewind_snapshot)
        theta_init = {t.name: t.param.detach().clone() for t in trainable_parameters(model)}
        if kind == "random_prune":
            theta_init = self.theta_init
        self._train(model, theta_init, level, tag=kind)
        metrics = self._measure(model, theta_init, level, kind)
        metrics["time_s"] = time.perf_counter() - start
        return metrics

    def _mask_at(self, level: int) -> dict[str, torch.Tensor]:
        """The ticket's mask at ``level`` (the next level to run), computed on a copy: pruning is seeded by
        ``(seed, "prune", level)``, so the ticket's own prune step later draws the very same mask."""
        assert level == self.level, "controls run before their level's ticket"
        probe = copy_model(self.model)
        p = self.cfg.pruning
        prune_step(probe, p.fraction, criterion=p.criterion, strategy=p.strategy,
                   generator=generator(self.cfg.seed, "prune", level))
        return mask_state(probe)

    def _instability(self, level: int, start_point: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Train a second copy from the level's starting point with another data order (and NVRM noise), then
        the error barriers: between the two trained copies, and from the starting point to the ticket."""
        cfg = self.cfg.instability
        other = copy_model(self.model)
        rewind(other, start_point)
        self._train(other, self.theta_init, level, tag="instability")
        split = getattr(self.data, cfg.split)
        alphas = [i / (cfg.points - 1) for i in range(cfg.points)]
        trained = snapshot(self.model)
        between = linear_path_errors(self.model, trained, snapshot(other), split, alphas)
        from_start = linear_path_errors(self.model, start_point, trained, split, alphas)
        return {
            "instability_barrier": error_barrier(between),
            "instability_errors": json.dumps(between),
            "instability_distance": parameter_distance(other, trained),
            "init_path_barrier": error_barrier(from_start),
            "init_path_errors": json.dumps(from_start),
            "instability_split": cfg.split,
        }

    def _train(self, model: nn.Module, theta_init: dict[str, torch.Tensor], level: int, tag: str = TICKET) -> None:
        """One level's training (paper 000 eq. (1)); ``tag`` separates the random streams of controls and of
        the instability copy from the ticket's (the ticket keeps the historical ``("order", level)``)."""
        t = self.cfg.train
        streams = (level,) if tag == TICKET else (level, tag)
        order = (level,) if tag in (TICKET, "reinit", "random_prune") else (level, tag)  # controls: paired order
        stepper = make_stepper(
            t.optimizer, model, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
            rho=t.rho, adaptive=t.adaptive, b=t.nvrm_b, generator=generator(self.cfg.seed, "nvrm", *streams),
        )
        reg = self.cfg.regularizer
        on_iteration = None
        if level == 0 and tag == TICKET and self.rewind_snapshot is None:
            k = self.cfg.pruning.rewind_iteration

            def on_iteration(i: int) -> None:
                if i == k:
                    self.rewind_snapshot = snapshot(model)

        train_epochs(
            model, self.data.train, stepper, epochs=t.epochs, batch_size=t.batch_size,
            milestones=t.milestones, gamma=t.gamma, generator=generator(self.cfg.seed, "order", *order),
            augment=self.data.augment, regularizer=Regularizer(reg.kind, reg.lam, theta_init),
            on_iteration=on_iteration,
            autocast_dtype=torch.bfloat16 if t.precision == "bf16" else None,
            channels_last=uses_channels_last(self.cfg, model), warmup_iterations=t.warmup_iterations,
        )

    def _measure(self, model: nn.Module, theta_init: dict[str, torch.Tensor], level: int,
                 branch: str) -> dict[str, Any]:
        m: dict[str, Any] = {"level": level, "branch": branch, "density": density(model)}
        m["sparsity"] = 1.0 - m["density"]
        for split in ("train", "val", "test"):
            loss, acc = evaluate(model, getattr(self.data, split))
            m[f"{split}_loss"], m[f"{split}_acc"] = loss, acc
        m["dist_init"] = parameter_distance(model, theta_init)
        m["weight_norm"] = parameter_distance(model, None)
        dense = self.history[0] if self.history else m
        m["test_acc_gap"] = dense["test_acc"] - m["test_acc"]
        m["val_acc_gap"] = dense["val_acc"] - m["val_acc"]
        return m

    def _selected(self, spec: LevelSpec, level: int) -> bool:
        return _selected(spec, level, self.num_levels)

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue (tensors and plain Python only: loads with weights_only=True).

        Compact: the weights once, the masks as booleans; θ_init (and the rewind point when it is θ_init) is
        not stored but rebuilt from the seed on load, and checked against the digest stored here."""
        return {
            "level": self.level,
            "cursor": self.cursor,
            "weights": {k: v.detach().cpu() for k, v in snapshot(self.model).items()},
            "masks": mask_state(self.model),
            "theta_init_digest": tensor_digest(self.theta_init),
            "rewind": None if self.cfg.pruning.rewind_iteration == 0 or self.rewind_snapshot is None
            else {k: v.cpu() for k, v in self.rewind_snapshot.items()},
            "history": list(self.history),
            "seed": self.cfg.seed,
            "config": self.cfg.model_dump(mode="json"),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["config"] != self.cfg.model_dump(mode="json"):
            raise ValueError("checkpoint was written by a different experiment configuration")
        if state["theta_init_digest"] != tensor_digest(self.theta_init):
            raise ValueError(f"the initialisation rebuilt from seed {self.cfg.seed} differs from the checkpoint's "
                             "(another torch version or device?): resume where the run started")
        load_mask_state(self.model, state["masks"])
        rewind(self.model, state["weights"])
        if state["rewind"] is not None:
            self.rewind_snapshot = {k: v.to(self.device) for k, v in state["rewind"].items()}
        self.level = state["level"]
        self.cursor = state["cursor"]
        self.history = list(state["history"])

    def worth_keeping(self) -> bool:
        """Whether the checkpoint of the step just taken should outlive later ones: a ticket level at which
        flatness, bounds, controls or instability were declared (to re-measure it offline), or the last."""
        if not self.history or self.history[-1]["branch"] != TICKET:
            return False
        return self._declared(self.cfg, self.history[-1]["level"])

    @staticmethod
    def _declared(cfg: ExperimentConfig, level: int) -> bool:
        n = cfg.pruning.levels + 1
        c = cfg
        return level == n - 1 or any(_selected(spec, level, n) for spec in (
            c.flatness.levels, c.bound.levels, c.controls.levels, c.instability.levels))

    @classmethod
    def levels_worth_keeping(cls, cfg: ExperimentConfig) -> int:
        return sum(cls._declared(cfg, level) for level in range(cfg.pruning.levels + 1))


def _selected(spec: LevelSpec, level: int, num_levels: int) -> bool:
    if spec == "none":
        return False
    if spec == "all":
        return True
    if spec == "last":
        return level == num_levels - 1
    return level in spec
