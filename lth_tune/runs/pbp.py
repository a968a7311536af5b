"""PAC-Bayes pruning (PBP) and probabilistic fine-tuning (PFT), paper 004 §§2.1, 6, App. A–B, D.2–D.3.

PBP (``pbp.mode = "pbp"``), S = the training split, S_P ⊂ S with |S_P| = round(α|S|) (§5.1)::

    stage 1  train the deterministic network on S_P                                (SGD, prior_lr, prior_epochs)
    stage 2  λ⁰ ← one-shot criterion g (magnitude | snip | random) on Ŵ_P, isotropic or block-isotropic (A.1)
             minimise E_P[CE] on S_P over W⁰, λ⁰ (and biases/BN) with RelaxedBernoulli(β) masks (B.3)
             → the prior P = spike-and-slab(λ⁰, N(W⁰, σ²))                           (prior_lr, finetune_epochs)
    stage 3  Q ← P; freeze biases/BN (they belong to P); minimise Theorem 1 (eq. (4)) on minibatches of S
             over W (and λ): R̃ = CE with floored probabilities / log(1/floor) ∈ [0, 1] (A.3),
             KL = Σ kl(λ‖λ⁰) + λ (W − W⁰)²/(2σ²) (B.4), n = |S \\ S_P|                (posterior_lr, posterior_epochs)
             certificate on S \\ S_P with the 0–1 loss: R̂_m over m exact Bernoulli networks,
             R_up = kl⁻¹(R̂_m‖log(2/δ′)/m), bound at R_up (Theorem 1 and Theorem 2), confidence 1 − δ − δ′.

PFT (``pbp.mode = "pft"``, α ignored, everything on S)::

    stage 1  train the dense network on S;  stage 2 as above on S;
    stage 3  threshold λ to the top (1−s) fraction → deterministic mask, fine-tune W (stage-1 hyperparameters);
             baseline: the one-shot criterion mask on the stage-1 weights, fine-tuned the same way (Figure 1);
             mask_overlap = the share of the one-shot mask PFT keeps (Figure 2, left); with ``noise_variances``
             the relative accuracy drop on S of the dense, baseline and PFT networks under weight noise
             W → W + vζ (Figure 2, right; :func:`lth_tune.flatness.weight_noise_robustness`).

σ² = ``prior_var`` is fixed (prior and posterior slabs share it, D.2). Everything the prior consists of depends on
S_P only: its weights, keep-probabilities, biases and BatchNorm statistics (frozen in stage 3, so they cost no KL),
and, in PBP mode, the input standardisation (re-done with S_P's statistics, :func:`standardize_with`; with α = 0
the standardisation of ``load_dataset`` on all of S is kept). One ``PBPRun.next_stage()`` call is one
stage = one Ray Tune report (``level`` = stage − 1). Everything random is derived from ``(seed, purpose,
stage)`` (:mod:`lth_tune.seeding`), so a run restored from the checkpoint of stage k reproduces the
uninterrupted numbers of the later stages.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lth_tune.config import ExperimentConfig
from lth_tune.data import DataBundle, Split, batches, prior_bound_split, standardize_with
from lth_tune.flatness import weight_noise_robustness
from lth_tune.pacbayes import (
    Certificate,
    StochasticNet,
    bounded_cross_entropy,
    certify,
    criterion_scores,
    initial_keep_probabilities,
    keep_probability,
    theorem1_bound,
    top_k_masks,
)
from lth_tune.pacbayes.stochastic import stochastic_layers
from lth_tune.pruning import apply_mask_to_weights, attach_masks, density, load_mask_state
from lth_tune.seeding import derived_seed, fork_rng, generator
from lth_tune.training import DivergedError, evaluate, make_stepper, train_epochs

from .setup import init_model, load_experiment_data, resolve_device

__all__ = ["STAGE_NAMES", "PBPRun", "stage_milestones"]

STAGE_NAMES = {
    "pbp": {1: "prior_pretrain", 2: "prior_finetune", 3: "posterior"},
    "pft": {1: "pretrain", 2: "mask_finetune", 3: "pft_finetune"},
}


def stage_milestones(fractions: list[float], epochs: int) -> list[int]:
    """Epoch milestones of one stage from fractions of its length (e.g. [0.5, 0.75] of 60 → [30, 45])."""
    return sorted({min(epochs, max(1, round(f * epochs))) for f in fractions}) if epochs > 0 else []


def _cpu(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in d.items()}


class PBPRun:
    """The three stages as a resumable object: ``next_stage()`` → metrics; ``state_dict()`` → checkpoint."""

    CHECKPOINT_FILE = "pbp_state.pt"
    num_stages = 3

    def __init__(self, cfg: ExperimentConfig, device: torch.device | str | None = None,
                 data: DataBundle | None = None):
        self.cfg = cfg
        self.p = cfg.pbp
        self.device = torch.device(device) if device is not None else resolve_device(cfg.device)
        self.data = data if data is not None else load_experiment_data(cfg, self.device)
        train = self.data.train
        if self.p.mode == "pbp":
            prior_idx, bound_idx = prior_bound_split(len(train), self.p.alpha, seed=cfg.seed)
        else:  # PFT: every stage sees all of S
            prior_idx, bound_idx = torch.arange(len(train)), torch.zeros(0, dtype=torch.long)
        if self.p.mode == "pbp" and len(prior_idx):
            self.data = standardize_with(self.data, train.subset(prior_idx))
            train = self.data.train
        self.prior_split: Split = train.subset(prior_idx)
        self.bound_split: Split = train.subset(bound_idx)
        if self.p.mode == "pbp" and len(self.bound_split) == 0:
            raise ValueError(f"the bound split S \\ S_P is empty (|S|={len(train)}, alpha={self.p.alpha})")
        self.model = init_model(cfg, self.data, self.device)  # same θ_init as IMP for the same seed
        self.layers = stochastic_layers(self.model, cfg.pruning.ignore)
        self.net: StochasticNet | None = None
        self.prior: dict[str, dict[str, torch.Tensor]] | None = None
        self.osp_masks: dict[str, torch.Tensor] | None = None
        self.pretrained: dict[str, torch.Tensor] | None = None
        self.certificates: dict[str, dict[str, Any]] = {}
        self.stage = 1  # the next stage to run
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ bookkeeping
    @property
    def finished(self) -> bool:
        return self.stage > self.num_stages

    @property
    def n_bound(self) -> int:
        """n of Theorem 1: the size of the bound split S \\ S_P only (= |S| − round(α|S|))."""
        return len(self.bound_split)

    @property
    def certificate(self) -> Certificate | None:
        """The Theorem-1 certificate of the posterior (after stage 3 of PBP)."""
        d = self.certificates.get("posterior_theorem1")
        return Certificate.from_dict(d) if d else None

    def run(self) -> list[dict[str, Any]]:
        while not self.finished:
            self.next_stage()
        return self.history

    def step(self) -> dict[str, Any]:
        """The Run protocol (:class:`lth_tune.runs.Run`): one step = one stage."""
        return self.next_stage()

    def position(self) -> dict[str, Any]:
        return {"level": self.stage - 1, "stage": self.stage}

    def worth_keeping(self) -> bool:
        """Only the latest stage's checkpoint is kept: resume needs nothing older, analysis reads results.csv,
        and a stage's state (weights, float64 keep-probability scores of prior and posterior) is large."""
        return False

    def next_stage(self) -> dict[str, Any]:
        if self.finished:
            raise RuntimeError("PBP run already finished")
        start = time.perf_counter()
        stage = self.stage
        metrics = {1: self._stage1, 2: self._stage2, 3: self._stage3}[stage]()
        metrics = {"level": stage - 1, "stage": stage, "stage_name": STAGE_NAMES[self.p.mode][stage],
                   "mode": self.p.mode, "target_sparsity": self.p.sparsity, "n_prior": len(self.prior_split),
                   "n_bound": self.n_bound, **metrics}
        metrics["sparsity"] = 1.0 - metrics["density"]
        metrics["time_s"] = time.perf_counter() - start
        self.history.append(metrics)
        self.stage += 1
        return metrics

    # ------------------------------------------------------------------ stages
    def _stage1(self) -> dict[str, Any]:
        """Train the deterministic network on S_P (PBP) or S (PFT)."""
        p, t = self.p, self.cfg.train
        if len(self.prior_split) and p.prior_epochs:  # α = 0: the prior network stays at its initialisation
            stepper = make_stepper("sgd", self.model, lr=p.prior_lr, momentum=t.momentum,
                                   weight_decay=t.weight_decay)
            train_epochs(self.model, self.prior_split, stepper, epochs=p.prior_epochs, batch_size=t.batch_size,
                         milestones=stage_milestones(p.milestones, p.prior_epochs), gamma=t.gamma,
                         generator=generator(self.cfg.seed, "order", 1), augment=self.data.augment)
        if p.mode == "pft":
            self.pretrained = _cpu(self.model.state_dict())
        m: dict[str, Any] = {"density": 1.0, "expected_density": 1.0}
        for name in ("train", "val", "test"):
            split = getattr(self.data, name)
            if len(split) == 0:
                continue
            loss, acc = evaluate(self.model, split)
            m[f"{name}_loss"], m[f"{name}_acc"], m[f"det_{name}_err"] = loss, acc, 1.0 - acc
        return m

    def _stage2(self) -> dict[str, Any]:
        """Initialise λ⁰ from the one-shot criterion and fine-tune the stochastic network on S_P (PBP) or S."""
        p, cfg = self.p, self.cfg
        batch = None
        if p.init_criterion == "snip" and len(self.prior_split):
            batch = next(batches(self.prior_split, cfg.train.batch_size, generator=generator(cfg.seed, "snip")))
        scores = criterion_scores(self.model, self.layers, p.init_criterion, batch=batch,
                                  generator=generator(cfg.seed, "criterion"))
        self.osp_masks = top_k_masks(scores, 1.0 - p.sparsity)
        lam0 = initial_keep_probabilities(scores, p.sparsity, shape=p.prior_shape, epsilon=p.epsilon)
        self.net = StochasticNet(self.model, sigma=math.sqrt(p.prior_var), mapping=p.mapping, layers=self.layers,
                                 keep_probs=lam0)
        m: dict[str, Any] = {"density_init": self.net.expected_density()}

        def expected_ce(x, y):
            return F.cross_entropy(self.net(x, "relaxed", beta=p.beta), y)

        m["objective"] = self._train_stochastic(self.prior_split, list(self.net.parameters()), p.prior_lr,
                                                p.finetune_epochs, expected_ce, stage=2)
        self.prior = self.net.distribution()
        m.update(self._stochastic_metrics(stage=2))
        m["test_err_prior"] = m["stoch_test_err"]
        m["density_prior"] = m["expected_density"]
        if p.mode == "pbp":  # the prior is itself a stochastic predictor: Q = P, KL = 0, bound on S \ S_P
            m.update(self._certify(kl=0.0, stage=2, key="prior"))
        return m

    def _stage3(self) -> dict[str, Any]:
        return self._posterior() if self.p.mode == "pbp" else self._pft()

    def _posterior(self) -> dict[str, Any]:
        """Minimise Theorem 1 over the posterior, then certify it on S \\ S_P with the 0–1 loss."""
        p = self.p
        net, prior, n = self.net, self.prior, self.n_bound
        net.freeze_deterministic()
        params = net.prunable_parameters() + (list(net.scores) if p.train_probs else [])
        for s in net.scores:
            s.requires_grad_(p.train_probs)

        def theorem1_objective(x, y):
            risk = bounded_cross_entropy(net(x, "relaxed", beta=p.beta), y, p.prob_floor).double()
            return theorem1_bound(risk, net.kl(prior), n, p.delta)

        m: dict[str, Any] = {}
        m["objective"] = self._train_stochastic(self.data.train, params, p.posterior_lr, p.posterior_epochs,
                                                theorem1_objective, stage=3)
        m.update(self._stochastic_metrics(stage=3))
        with torch.no_grad():
            kl = float(net.kl(prior))
        m.update(self._certify(kl=kl, stage=3, key="posterior"))
        m["test_err_posterior"] = m["stoch_test_err"]
        m["test_err_prior"] = self.history[-1]["test_err_prior"]
        m["density_prior"] = self.history[-1]["density_prior"]
        m["density_posterior"] = m["expected_density"]
        m["kl_normalized"] = kl / n
        return m

    def _pft(self) -> dict[str, Any]:
        """Threshold the fine-tuned λ at the target density, fine-tune W; the one-shot baseline alongside."""
        p = self.p
        pft_masks = self.net.threshold_masks(1.0 - p.sparsity)
        m: dict[str, Any] = {"mask_overlap": self._overlap(pft_masks)}
        for tag, state, masks in (("pft", self.net.model.state_dict(), pft_masks),
                                  ("baseline", self.pretrained, self.osp_masks)):
            model = self._finetune_masked(state, masks)
            m[f"density_{tag}"] = density(model)
            for name in ("train", "val", "test"):
                split = getattr(self.data, name)
                if len(split):
                    loss, acc = evaluate(model, split)
                    m[f"{name}_acc_{tag}"], m[f"{name}_err_{tag}"], m[f"{name}_loss_{tag}"] = acc, 1 - acc, loss
            if p.noise_variances:
                m.update(self._noise_robustness(tag, model))
        if p.noise_variances:
            dense = copy.deepcopy(self.net.model)
            dense.load_state_dict(self.pretrained)
            for q in dense.parameters():  # every weight is perturbed (the space is that of trainable parameters)
                q.requires_grad_(True)
            m.update(self._noise_robustness("dense", dense))
            m["noise_variances"] = json.dumps(p.noise_variances)
        m["density"] = m["density_pft"]
        for name in ("train", "val", "test"):
            if f"{name}_acc_pft" in m:
                m[f"{name}_acc"] = m[f"{name}_acc_pft"]
                m[f"{name}_loss"] = m[f"{name}_loss_pft"]
        return m

    def _noise_robustness(self, tag: str, model: nn.Module) -> dict[str, Any]:
        """Relative accuracy drop on S under weight noise v² ∈ ``pbp.noise_variances`` (paper 004 Fig. 2 right):
        ``noise_clean_acc_<tag>`` and ``noise_drop_<tag>`` (a JSON list, one mean drop per variance)."""
        clean, drops = weight_noise_robustness(model, self.data.train, self.p.noise_variances,
                                               draws=self.p.noise_draws, generator=generator(self.cfg.seed, "noise",
                                                                                              tag))
        return {f"noise_clean_acc_{tag}": clean, f"noise_drop_{tag}": json.dumps([d.drop for d in drops])}

    # ------------------------------------------------------------------ pieces
    def _train_stochastic(self, split: Split, params: list[nn.Parameter], lr: float, epochs: int,
                          loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, stage: int) -> float:
        """SGD (momentum from train.momentum, no weight decay) on ``loss_fn`` with relaxed samples; returns the
        mean loss of the last epoch (nan without epochs). Raises DivergedError on a non-finite epoch loss."""
        t = self.cfg.train
        if len(split) == 0 or epochs == 0:
            return math.nan
        opt = torch.optim.SGD(params, lr=lr, momentum=t.momentum)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=stage_milestones(self.p.milestones, epochs),
                                                     gamma=t.gamma)
        order = generator(self.cfg.seed, "order", stage)
        last = math.nan
        self.net.train()
        with fork_rng(derived_seed(self.cfg.seed, "sample", stage), self.device):
            for epoch in range(epochs):
                total, count = torch.zeros((), dtype=torch.float64, device=self.device), 0
                for x, y in batches(split, t.batch_size, generator=order, shuffle=True, augment=self.data.augment):
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(x, y)
                    loss.backward()
                    opt.step()
                    total, count = total + loss.detach().double() * len(y), count + len(y)
                sched.step()
                last = total.item() / max(count, 1)
                if not math.isfinite(last):
                    raise DivergedError(f"stage {stage} objective is {last} in epoch {epoch + 1}: lower the "
                                        f"learning rate")
        self.net.eval()
        return last

    def _errors(self, split: Split, m: int, *, stage: int, tag: str, mode: str = "bernoulli",
                masks: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        g = generator(self.cfg.seed, "eval", stage, tag, device=self.device)
        return self.net.sample_errors(split.x, split.y, m, generator=g, mode=mode, masks=masks)

    def _stochastic_metrics(self, stage: int) -> dict[str, Any]:
        """Errors of the Gibbs predictor (eval_samples exact networks) and of the deterministic thresholded
        network (top (1−s) λ, mean weights), expected density and mask entropy."""
        p, net = self.p, self.net
        m: dict[str, Any] = {"expected_density": net.expected_density(), "entropy": net.mean_entropy()}
        m["density"] = m["expected_density"]
        masks = net.threshold_masks(1.0 - p.sparsity)
        m["mask_overlap"] = self._overlap(masks)
        for name in ("train", "val", "test"):
            split = getattr(self.data, name)
            if len(split) == 0:
                continue
            stoch = float(self._errors(split, p.eval_samples, stage=stage, tag=name).mean())
            det = float(self._errors(split, 1, stage=stage, tag=name, mode="mask", masks=masks).mean())
            m[f"stoch_{name}_err"], m[f"det_{name}_err"] = stoch, det
            m[f"{name}_acc"] = 1.0 - stoch
        return m

    def _certify(self, *, kl: float, stage: int, key: str) -> dict[str, Any]:
        """0–1 certificate on S \\ S_P: R̂_m over ``mc_samples`` exact networks (or one network per example and
        pass, ``mc_mode: per_example``), Theorem 1 (``bound``) and Theorem 2 (``bound_kl``), K = 1
        (``lth-tune analyze`` recertifies with the study's grid size)."""
        p = self.p
        if p.mc_mode == "per_example":  # a fresh network per example and pass: m = passes · n
            m = p.mc_passes * self.n_bound
            g = generator(self.cfg.seed, "eval", stage, "certificate", device=self.device)
            risk = self.net.per_example_errors(self.bound_split.x, self.bound_split.y, p.mc_passes, generator=g) / m
        else:
            m = p.mc_samples
            risk = float(self._errors(self.bound_split, p.mc_samples, stage=stage, tag="certificate").mean())
        certs = {form: certify(risk, m, kl, self.n_bound, delta=p.delta, delta_prime=p.delta_prime,
                               form=form, grid_size=1) for form in ("theorem1", "kl")}
        for form, c in certs.items():
            self.certificates[f"{key}_{form}"] = c.to_dict()
        c = certs["theorem1"]
        return {
            "bound": c.bound, "bound_kl": certs["kl"].bound, "kl": kl,
            "cert_emp_risk_mc": c.emp_risk_mc, "cert_risk_upper": c.risk_upper, "cert_kl": c.kl, "cert_n": c.n,
            "cert_m": c.m, "cert_delta": c.delta, "cert_delta_prime": c.delta_prime, "cert_epsilon": c.epsilon,
            "cert_grid_size": c.grid_size, "cert_confidence": c.confidence,
        }

    def _overlap(self, masks: dict[str, torch.Tensor]) -> float:
        """Fraction of the one-shot mask's kept weights that ``masks`` keeps too (paper 004 Figure 2, left)."""
        both = sum(int((masks[n] & self.osp_masks[n]).sum()) for n in masks)
        kept = sum(int(self.osp_masks[n].sum()) for n in masks)
        return both / max(kept, 1)

    def _finetune_masked(self, state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> nn.Module:
        """A deterministic sparse copy (``lth_tune.pruning`` masks) fine-tuned with the stage-1 hyperparameters."""
        p, t = self.p, self.cfg.train
        model = copy.deepcopy(self.net.model)
        for q in model.parameters():
            q.requires_grad_(True)
        model.load_state_dict(state)
        attach_masks(model, ignore=self.cfg.pruning.ignore)
        load_mask_state(model, {n: v.cpu() for n, v in masks.items()})
        apply_mask_to_weights(model)
        stepper = make_stepper("sgd", model, lr=p.prior_lr, momentum=t.momentum, weight_decay=t.weight_decay)
        train_epochs(model, self.data.train, stepper, epochs=p.prior_epochs, batch_size=t.batch_size,
                     milestones=stage_milestones(p.milestones, p.prior_epochs), gamma=t.gamma,
                     generator=generator(self.cfg.seed, "order", "finetune"), augment=self.data.augment)
        return model

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue (tensors and plain Python only: loads with weights_only=True)."""
        return {
            "stage": self.stage,
            "model": _cpu(self.model.state_dict()),
            "scores": None if self.net is None else {n: s.detach().cpu().clone()
                                                     for n, s in zip(self.net.layers, self.net.scores)},
            "prior_mean": None if self.prior is None else _cpu(self.prior["mean"]),
            "prior_score": None if self.prior is None else _cpu(self.prior["score"]),
            "osp_masks": None if self.osp_masks is None else _cpu(self.osp_masks),
            "pretrained": None if self.pretrained is None else _cpu(self.pretrained),
            "certificates": copy.deepcopy(self.certificates),
            "history": list(self.history),
            "config": self.cfg.model_dump(mode="json"),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["config"] != self.cfg.model_dump(mode="json"):
            raise ValueError("checkpoint was written by a different experiment configuration")
        dev = self.device
        self.model.load_state_dict({k: v.to(dev) for k, v in state["model"].items()})
        self.net = None
        if state["scores"] is not None:
            self.net = StochasticNet(self.model, sigma=math.sqrt(self.p.prior_var), mapping=self.p.mapping,
                                     layers=self.layers)
            with torch.no_grad():
                for n, s in zip(self.net.layers, self.net.scores):
                    s.copy_(state["scores"][n].to(dev))
        self.prior = None
        if state["prior_score"] is not None:
            score = {k: v.to(dev) for k, v in state["prior_score"].items()}
            self.prior = {"mean": {k: v.to(dev) for k, v in state["prior_mean"].items()}, "score": score,
                          "keep": {k: keep_probability(v, self.p.mapping) for k, v in score.items()}}
        to_dev = lambda d: None if d is None else {k: v.to(dev) for k, v in d.items()}
        self.osp_masks = to_dev(state["osp_masks"])
        self.pretrained = to_dev(state["pretrained"])
        self.certificates = copy.deepcopy(state["certificates"])
        self.stage = state["stage"]
        self.history = list(state["history"])
        if self.net is not None and self.stage > 3:
            self.net.freeze_deterministic()
