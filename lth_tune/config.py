"""Typed study configuration shared by YAML study files, `--set` overrides and the Tune trainables.

A study file has four sections::

    experiment:  what one trial runs (data, model, training, regulariser, IMP, flatness, bound, seed)
    search:      how Optuna explores a *finite declared grid* over experiment keys
    resources:   per-trial CPU / fractional GPU / torch threads
    output:      where results go

Every searched parameter lives on a finite grid, so the grid size K used by the union bound
(paper 004 App. D.2: "we tuned only on a finite grid of values, and by a union bound argument…")
is known before the first trial runs.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lth_tune.data import DATASETS
from lth_tune.data.mnist1d import check_num_samples
from lth_tune.models import MODELS
from lth_tune.training import OPTIMIZERS, REGULARIZERS

# Allowed values come from the registries (one list each): adding a model or dataset there is enough.
DatasetName = Literal[tuple(DATASETS)]  # type: ignore[valid-type]
ModelName = Literal[tuple(MODELS)]  # type: ignore[valid-type]
OptimizerName = Literal[tuple(OPTIMIZERS)]  # type: ignore[valid-type]
RegularizerName = Literal[tuple(REGULARIZERS)]  # type: ignore[valid-type]
#: IMP levels at which something is measured: a list of levels, or none / last / all.
LevelSpec = list[int] | Literal["last", "all", "none"]


class StudyError(ValueError):
    """A study file or override is invalid. The message is one line naming the key and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- experiment


class DataConfig(_Strict):
    dataset: DatasetName = Field("mnist1d", description="a dataset of the registry (table Datasets below)")
    root: str | None = Field(None, description="dataset directory (default: $LTH_TUNE_DATA or ~/.cache/lth_tune/data)")
    download: bool = Field(False, description="let torchvision download a missing dataset (needs network)")
    val_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="share of the training set held out for validation (selection happens there)")
    label_noise: float = Field(0.0, ge=0.0, le=1.0, description="fraction of training labels flipped (paper 000 §3.1)")
    train_subset: int | None = Field(
        None, gt=0, description="keep only this many training examples (quick runs)")
    augment: bool | None = Field(
        None, description="random crop (pad 4) + horizontal flip; None = on for CIFAR")
    num_samples: int | None = Field(
        None, gt=0, description="mnist1d only: generate this many training examples (a multiple of 10; the test "
        "split stays the classic 1000); None = the classic 4000")
    normalize_on: Literal["auto", "train", "val"] = Field(
        "auto", description="split whose per-channel mean/std standardise the inputs; auto = val when a PAC-Bayes "
        "certificate uses the training split as its bound set (ticket bounds, PBP), else train")

    @model_validator(mode="after")
    def _generated(self):
        if self.num_samples is not None:
            if self.dataset != "mnist1d":
                raise ValueError(f"num_samples is for the generated mnist1d; {self.dataset} has a fixed size "
                                 f"(use data.train_subset to shrink it)")
            check_num_samples(self.num_samples)
        if self.normalize_on == "val" and self.val_fraction == 0:
            raise ValueError("normalize_on: val needs a validation split (val_fraction > 0)")
        return self


MODEL_OPTIONS = ("widths", "width", "depth", "batchnorm", "residual")


class ModelConfig(_Strict):
    name: ModelName = Field("mlp", description="a model of the registry (table Models below)")
    widths: list[int] | None = Field(
        None, description="hidden widths of mlp, e.g. [1000, 1000, 1000] (paper 004 MNIST)")
    width: int | None = Field(None, gt=0, description="channels of conv1d / base width of resnet20, resnet1d, vgg16")
    depth: int | None = Field(None, gt=0, description="resnet1d: 6·blocks + 2 layers (8, 14, 20, ...)")
    batchnorm: bool | None = Field(None, description="resnet1d: BatchNorm after every convolution (default true)")
    residual: bool | None = Field(None, description="resnet1d: residual shortcuts (default true)")

    @field_validator("widths")
    @classmethod
    def _positive(cls, v):
        if v is not None and any(w <= 0 for w in v):
            raise ValueError("every width must be a positive integer")
        return v

    def options(self) -> dict[str, Any]:
        """The size options given (for ``lth_tune.models.build_model``)."""
        return {k: getattr(self, k) for k in MODEL_OPTIONS if getattr(self, k) is not None}

    @model_validator(mode="after")
    def _options(self):
        takes = MODELS[self.name].options
        for option in MODEL_OPTIONS:
            if getattr(self, option) is not None and option not in takes:
                allowed = ", ".join(takes) or "no size option"
                raise ValueError(f"model {self.name!r} does not take {option} (it takes: {allowed}); "
                                 f"remove model.{option}")
        return self


class TrainConfig(_Strict):
    optimizer: OptimizerName = Field(
        "sgd", description="sgd, sam (ρ = rho) or nvrm (b = nvrm_b); perturbations touch unpruned weights only")
    lr: float = Field(0.1, gt=0.0, description="learning rate")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum")
    weight_decay: float = Field(0.0, ge=0.0, description="SGD weight decay")
    batch_size: int = Field(128, gt=0, description="minibatch size")
    epochs: int = Field(10, gt=0, description="epochs per IMP level")
    milestones: list[int] = Field(default_factory=list, description="epochs at which lr is multiplied by gamma")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="learning-rate factor at each milestone")
    rho: float = Field(0.05, gt=0.0, description="SAM neighbourhood radius ρ (Foret et al. 2021)")
    adaptive: bool = Field(False, description="adaptive SAM (Kwon et al. 2021)")
    nvrm_b: float = Field(0.01, gt=0.0, description="NVRM noise scale b (Xie et al. 2021)")
    warmup_iterations: int = Field(0, ge=0, description="linear learning-rate warm-up over the first k iterations of "
                                   "every training (Frankle et al. 2020's remedy for the large learning rate)")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16 = forward/backward under bfloat16 autocast (weights, masks, updates stay fp32)")
    channels_last: bool | None = Field(None, description="channels-last memory format; None = on for 2-D conv nets")

    @model_validator(mode="after")
    def _milestones(self):
        if any(m <= 0 or m > self.epochs for m in self.milestones):
            raise ValueError(f"milestones must lie in 1..epochs={self.epochs}, got {self.milestones}")
        return self


class RegularizerConfig(_Strict):
    kind: RegularizerName = Field(
        "none", description="l2_init = λ‖m⊙(θ−θ_init)‖², l2_norm = λ‖m⊙θ‖² (paper 000 eq. 1)")
    lam: float = Field(0.0, ge=0.0, description="λ of paper 000 eq. (1)")


class PruningConfig(_Strict):
    levels: int = Field(8, ge=0, description="IMP levels after the dense level 0")
    fraction: float = Field(0.2, gt=0.0, lt=1.0, description="fraction of remaining weights pruned per level")
    strategy: Literal["global", "layerwise"] = Field(
        "global", description="global = one magnitude ranking over all layers; layerwise = per layer")
    criterion: Literal["large_final", "small_final", "random"] = Field(
        "large_final", description="large_final = IMP; small_final, random (paper 000 Table 2)")
    ignore: list[str] = Field(default_factory=list, description="module names never pruned, e.g. ['fc']")
    rewind_iteration: int = Field(0, ge=0, description="0 = rewind to init, k = rewind to iteration k")


class FlatnessConfig(_Strict):
    """Flatness measurements on the trained ticket (paper 000 §3.2, §4.2)."""

    levels: LevelSpec = Field("none", description="IMP levels to measure at: none, last, all or a list")
    trace: bool = Field(True, description="Hessian trace")
    top_eig: bool = Field(True, description="top Hessian eigenvalue")
    landscape: bool = Field(False, description="1-D training loss along the top eigenvector (Figure 2)")
    sharpness_sigma: float | None = Field(
        None, gt=0.0, description="σ of the expected sharpness E[L(θ+ε)]−L(θ); None = skip")
    n_batches: int = Field(4, gt=0, description="training batches the measurements use")
    batch_size: int = Field(500, gt=0, description="size of those batches")
    trace_iters: int = Field(100, gt=0, description="maximum Hutchinson probes (pyhessian)")
    eig_iters: int = Field(100, gt=0, description="maximum power-iteration (pyhessian) or Lanczos (fast) steps")
    tol: float = Field(1e-3, gt=0.0, lt=1.0, description="relative tolerance of the trace and eigenvalue iterations")
    top_n: int = Field(1, gt=0, description="number of top Hessian eigenvalues reported")
    sharpness_samples: int = Field(32, gt=0, description="noise draws of the expected sharpness")
    landscape_radius: float = Field(1.0, gt=0.0, description="1-D landscape spans α ∈ [−radius, radius]")
    landscape_points: int = Field(21, ge=3, description="points of the 1-D landscape (odd includes α = 0)")
    method: Literal["pyhessian", "fast"] = Field(
        "pyhessian", description="pyhessian (paper 000) or fast (exact GGN-diagonal trace + Lanczos)")

    def landscape_alphas(self) -> list[float]:
        return [float(a) for a in np.linspace(-self.landscape_radius, self.landscape_radius, self.landscape_points)]


CONTROL_KINDS = ("reinit", "random_prune")


class ControlsConfig(_Strict):
    """Lottery-ticket controls (Frankle & Carbin 2019 §2; OpenLTH ``randomly_reinitialize`` /
    ``randomly_prune`` branches): at each declared level the ticket's mask is retrained from a fresh random
    initialisation (``reinit``), and a random mask with the ticket's per-layer density is retrained from the
    ticket's own rewind point (``random_prune``). Each is one extra training per level."""

    kinds: list[Literal["reinit", "random_prune"]] = Field(
        default_factory=list, description="controls to run: reinit, random_prune (empty = none)")
    levels: LevelSpec = Field("none", description="IMP levels (≥ 1) to run them at: none, last, all or a list")

    @field_validator("kinds")
    @classmethod
    def _distinct(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"controls.kinds lists a kind twice: {v}")
        return v

    @field_validator("levels")
    @classmethod
    def _no_dense(cls, v):
        if isinstance(v, list) and any(lv < 1 for lv in v):
            raise ValueError(f"controls.levels must be ≥ 1 (level 0 is the dense network, which has no mask), got {v}")
        return v


class InstabilityConfig(_Strict):
    """Instability analysis (linear mode connectivity, Frankle et al. 2020): from the level's rewind point a
    second copy is trained with another data order (and NVRM noise); the error barrier along the straight
    line between the two trained networks, and along the line from the rewind point to the trained ticket,
    is reported. One extra training per level."""

    levels: LevelSpec = Field("none", description="IMP levels to measure at: none, last, all or a list")
    points: int = Field(11, ge=3, description="evaluation points on each line (α = 0 … 1)")
    split: Literal["test", "val", "train"] = Field("test", description="split whose error the barrier measures")


class BoundConfig(_Strict):
    """PAC-Bayes bound of the trained ticket (paper 000 §4.3)."""

    levels: LevelSpec = Field("none", description="IMP levels to bound at: none, last, all or a list")
    prior_sigma: float = Field(0.01, gt=0.0, description="prior standard deviation σ_p (a searched grid value)")
    prior_sigmas: list[float] | None = Field(
        None, description="declared σ_p grid evaluated within each trial (replaces prior_sigma); its length J "
        "enters the union bound: the trial reports its best σ_p at δ/J, analysis recertifies at δ/(K·J)")
    delta: float = Field(0.05, gt=0.0, lt=1.0, description="confidence parameter δ of the PAC-Bayes bound")
    delta_prime: float = Field(
        0.01, gt=0.0, lt=1.0, description="δ′ of the Monte Carlo step (total confidence 1−δ−δ′)")
    mc_samples: int = Field(100, gt=0, description="sampled networks m for the Gibbs risk (mc_mode: networks)")
    mc_mode: Literal["networks", "per_example"] = Field(
        "networks", description="Monte-Carlo step of the certificate: networks (mc_samples networks on all of S, "
        "m = mc_samples) or per_example (MLPs: a fresh network per example and pass, m = mc_passes · n)")
    mc_passes: int = Field(4, gt=0, description="passes over S of the per_example Monte-Carlo step")
    steps: int = Field(200, ge=0, description="Adam steps on the per-weight log σ_q of the posterior")
    batch_size: int = Field(256, gt=0, description="minibatch of those Adam steps")
    lr: float = Field(0.05, gt=0.0, description="learning rate of those Adam steps")

    @field_validator("prior_sigmas")
    @classmethod
    def _sigmas(cls, v):
        if v is not None:
            if not v or any(not (s > 0 and math.isfinite(s)) for s in v):
                raise ValueError("prior_sigmas must be a non-empty list of positive numbers")
            if len(set(v)) != len(v):
                raise ValueError("prior_sigmas must be distinct (each value counts once in the union bound)")
        return v

    def sigma_grid(self) -> list[float]:
        """The declared prior σ_p values one trial evaluates: ``prior_sigmas``, or ``[prior_sigma]``."""
        return [float(s) for s in self.prior_sigmas] if self.prior_sigmas else [float(self.prior_sigma)]


class PBPConfig(_Strict):
    """PAC-Bayes pruning / probabilistic fine-tuning (paper 004 §§2, 5–6, App. A–B, D.2)."""

    mode: Literal["pbp", "pft"] = Field(
        "pbp", description="pbp = three stages with a certificate; pft = threshold the fine-tuned mask")
    alpha: float = Field(0.5, ge=0.0, lt=1.0, description="fraction |S_P|/|S| that trains the prior (§5.1)")
    sparsity: float = Field(0.9, ge=0.0, lt=1.0, description="target sparsity s of the stochastic mask")
    init_criterion: Literal["magnitude", "snip", "random"] = Field(
        "magnitude", description="one-shot criterion initialising the keep-probabilities")
    prior_shape: Literal["isotropic", "block_isotropic"] = Field(
        "block_isotropic", description="isotropic (λ⁰ = 1−s) or block-isotropic (App. A.1)")
    epsilon: float = Field(1e-4, gt=0.0, lt=1.0, description="block-isotropic ε of App. A.1 eq. (6)")
    mapping: Literal["sigmoid", "clamp"] = Field(
        "sigmoid", description="score → keep-probability: sigmoid or clamp (App. B.1)")
    beta: float = Field(0.5, gt=0.0, description="concrete (RelaxedBernoulli) temperature β (App. B.3)")
    prior_var: float = Field(1e-4, gt=0.0, description="per-weight prior variance σ² (a searched grid value, D.2)")
    prior_lr: float = Field(0.01, gt=0.0, description="learning rate of stages 1 and 2")
    prior_epochs: int = Field(10, ge=0, description="stage 1: pre-train the prior network on S_P")
    finetune_epochs: int = Field(10, ge=0, description="stage 2: fine-tune the stochastic prior on S_P")
    posterior_lr: float = Field(1e-3, gt=0.0, description="learning rate of stage 3 (searched in D.2)")
    posterior_epochs: int = Field(10, ge=0, description="stage 3: train the posterior on S to minimise Theorem 1")
    prob_floor: float = Field(1e-4, gt=0.0, lt=0.5, description="probability floor bounding the CE surrogate (A.3)")
    delta: float = Field(0.05, gt=0.0, lt=1.0, description="confidence parameter δ of Theorem 1")
    delta_prime: float = Field(
        0.01, gt=0.0, lt=1.0, description="δ′ of the Monte Carlo step (total confidence 1−δ−δ′)")
    mc_samples: int = Field(100, gt=0, description="sampled networks m for the Monte Carlo Gibbs risk "
                            "(mc_mode: networks)")
    mc_mode: Literal["networks", "per_example"] = Field(
        "networks", description="Monte-Carlo step of the certificate: networks (m = mc_samples) or per_example "
        "(MLPs: a fresh network per example and pass, m = mc_passes · |S \\ S_P|)")
    mc_passes: int = Field(4, gt=0, description="passes over S \\ S_P of the per_example Monte-Carlo step")
    eval_samples: int = Field(10, gt=0, description="sampled networks for the reported train/test errors of P, Q")
    train_probs: bool = Field(True, description="stage 3 trains the posterior keep-probabilities (else only W)")
    milestones: list[float] = Field(
        default_factory=list, description="fractions of each stage's epochs where the lr is multiplied by "
        "train.gamma (D.2 CIFAR-10: [0.5, 0.75])")
    noise_variances: list[float] = Field(
        default_factory=list, description="pft: weight-noise variances v² at which the dense, one-shot and PFT "
        "networks' relative accuracy drop on S is measured (paper 004 Fig. 2 right); [] = not measured")
    noise_draws: int = Field(5, gt=0, description="pft: noise draws per variance (noise_variances)")

    @field_validator("milestones")
    @classmethod
    def _fractions(cls, v):
        if any(not 0.0 < f <= 1.0 for f in v):
            raise ValueError(f"milestones are fractions of a stage's epochs in (0, 1], got {v}")
        return v

    @field_validator("noise_variances")
    @classmethod
    def _variances(cls, v):
        if any(not (0.0 < x < float("inf")) for x in v):
            raise ValueError(f"noise_variances are variances v² > 0, got {v}")
        return sorted(v)

    @model_validator(mode="after")
    def _consistent(self):
        if self.delta + self.delta_prime >= 1.0:
            raise ValueError(f"delta + delta_prime must be < 1, got {self.delta} + {self.delta_prime}")
        if self.noise_variances and self.mode != "pft":
            raise ValueError("noise_variances is measured by PFT runs only (paper 004 Fig. 2 right): set mode: pft "
                             "or remove noise_variances")
        if self.prior_shape == "block_isotropic" and not self.epsilon * self.sparsity < 1.0 - self.sparsity:
            raise ValueError(f"block_isotropic prior needs epsilon*s/(1-s) < 1 (paper 004 eq. (6)); got "
                             f"epsilon={self.epsilon}, sparsity={self.sparsity}")
        return self


class ExperimentConfig(_Strict):
    kind: Literal["imp", "pbp"] = Field(
        "imp", description="imp = an IMP run per trial (paper 000); pbp = PAC-Bayes pruning / PFT (paper 004)")
    seed: int = Field(0, description="fixes init, data order, label noise, splits and every sampled quantity")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    regularizer: RegularizerConfig = Field(default_factory=RegularizerConfig)
    pruning: PruningConfig = Field(default_factory=PruningConfig)
    flatness: FlatnessConfig = Field(default_factory=FlatnessConfig)
    bound: BoundConfig = Field(default_factory=BoundConfig)
    pbp: PBPConfig = Field(default_factory=PBPConfig)
    controls: ControlsConfig = Field(default_factory=ControlsConfig)
    instability: InstabilityConfig = Field(default_factory=InstabilityConfig)
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when visible, else cpu")

    @property
    def certifies_on_train(self) -> bool:
        """Whether the loader's input statistics would come from a PAC-Bayes bound set: ticket bounds (bound
        set S = the training split) and PBP at α = 0 (bound set S)."""
        if self.kind == "pbp":  # with α > 0 the run re-standardises with S_P's statistics (standardize_with)
            return self.pbp.mode == "pbp" and self.pbp.alpha == 0
        return self.bound.levels != "none"

    @property
    def normalization_split(self) -> str:
        """``data.normalize_on`` resolved: a certificate's bound set never provides the input statistics."""
        if self.data.normalize_on != "auto":
            return self.data.normalize_on
        return "val" if self.certifies_on_train else "train"

    @model_validator(mode="after")
    def _per_example_needs_an_mlp(self):
        per_example = (self.kind == "imp" and self.bound.levels != "none" and self.bound.mc_mode == "per_example") \
            or (self.kind == "pbp" and self.pbp.mode == "pbp" and self.pbp.mc_mode == "per_example")
        if per_example and not MODELS[self.model.name].mlp:
            section = "bound" if self.kind == "imp" else "pbp"
            raise ValueError(f"{section}.mc_mode: per_example needs an MLP (models "
                             f"{', '.join(n for n, m in MODELS.items() if m.mlp)}); use networks for {self.model.name}")
        if per_example and self.kind == "pbp" and self.pruning.ignore:
            raise ValueError("pbp.mc_mode: per_example needs every Linear layer stochastic (pruning.ignore empty)")
        return self

    @model_validator(mode="after")
    def _certificate_preprocessing(self):
        if self.certifies_on_train and self.data.normalize_on == "train":
            raise ValueError("data.normalize_on: train would standardise inputs with statistics of the bound set, "
                             "which the certificate does not pay for; use auto or val")
        if self.normalization_split == "val" and self.data.val_fraction == 0:
            raise ValueError("data.val_fraction: certificates take input statistics from the validation split "
                             "(disjoint from the bound set); set val_fraction > 0")
        return self

    def with_params(self, params: dict[str, Any]) -> ExperimentConfig:
        """A copy with dotted-key values (e.g. ``{"train.lr": 0.01}``) substituted and re-validated."""
        raw = self.model_dump()
        for key, value in params.items():
            _set_dotted(raw, key, value)
        return ExperimentConfig.model_validate(raw)


# --------------------------------------------------------------------------- search space


class GridParam(_Strict):
    """One searched experiment key on a finite grid: ``choice``, or a ``log``/``linear`` range with ``points``."""

    choice: list[Any] | None = None
    log: tuple[float, float] | None = None
    linear: tuple[float, float] | None = None
    exponent: tuple[float, float] | None = Field(
        None, description="base**k for k on a linear grid, e.g. base e, [-15, -3] (paper 004 D.2)")
    points: int | None = Field(None, ge=2)
    include_zero: bool = False
    base: Literal["10", "e", "2"] = "10"

    @model_validator(mode="after")
    def _one_kind(self):
        kinds = [k for k in ("choice", "log", "linear", "exponent") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of choice: [...], log: [low, high], linear: [low, high] "
                             "or exponent: [low, high]")
        if kinds[0] == "choice":
            if not self.choice:
                raise ValueError("choice must list at least one value")
            if self.points is not None:
                raise ValueError("points is only for log/linear ranges")
        else:
            if self.points is None:
                raise ValueError(f"{kinds[0]} range needs points: N (the grid must be finite)")
            lo, hi = getattr(self, kinds[0])
            if not lo < hi:
                raise ValueError(f"{kinds[0]} range needs low < high, got [{lo}, {hi}]")
            if kinds[0] == "log" and lo <= 0:
                raise ValueError("log range needs low > 0 (use include_zero: true to add 0)")
        return self

    def values(self) -> list[Any]:
        if self.choice is not None:
            vals = list(self.choice)
        elif self.log is not None:
            lo, hi = self.log
            vals = [float(v) for v in np.geomspace(lo, hi, self.points)]
        elif self.exponent is not None:
            base = {"10": 10.0, "e": math.e, "2": 2.0}[self.base]
            vals = [float(base**k) for k in np.linspace(*self.exponent, self.points)]
        else:
            lo, hi = self.linear
            vals = [float(v) for v in np.linspace(lo, hi, self.points)]
        vals = [_round_sig(v) if isinstance(v, float) else v for v in vals]
        if self.include_zero and 0 not in vals:
            vals = [0.0] + vals
        return vals


def _round_sig(x: float, sig: int = 10) -> float:
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, sig - 1 - math.floor(math.log10(abs(x))))


class SearchConfig(_Strict):
    sampler: Literal["tpe", "random", "grid"] = Field(
        "tpe", description="Optuna sampler over the grid: tpe, random or grid")
    seed: int = Field(0, description="sampler seed (fixes the suggestions)")
    num_trials: int | None = Field(None, gt=0, description="default: the grid size (every grid point once)")
    max_concurrent: int = Field(2, gt=0, description="trials running at once")
    metric: str = Field(
        "val_acc", description="reported metric Optuna optimises (its value at a trial's last report)")
    mode: Literal["min", "max"] = Field("max", description="max or min")
    space: dict[str, GridParam] = Field(
        default_factory=dict, description="experiment key → grid, e.g. train.lr: {choice: [0.01, 0.1]}")
    max_failures: int = Field(2, ge=-1, description="retries of a failed trial from its last checkpoint")
    checkpoint_every_s: float = Field(
        0.0, ge=0.0, description="a trial checkpoints a step when this many seconds passed since its last checkpoint "
        "(0 = every step); steps kept for later measurement and the last are always checkpointed. A retried "
        "trial recomputes at most this much, with the same numbers")
    report_every_s: float = Field(
        0.0, ge=0.0, description="a trial reports its steps to the driver when this many seconds passed since its "
        "last report, or with a checkpoint (0 = after every step); one report carries every step since. Each report "
        "is a round trip the trial waits for (≈4 ms): worth it where steps take under a second")
    storage: str | None = Field(None, description="Optuna RDB: 'sqlite' (= sqlite:///<experiment>/optuna.db) or "
                                "any SQLAlchemy URL, e.g. postgresql://host/db; None = in memory")

    def grid(self) -> dict[str, list[Any]]:
        return {key: p.values() for key, p in self.space.items()}

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid().values()) if self.space else 1

    def trials(self) -> int:
        return self.num_trials or self.grid_size()

    def trials_to_run(self) -> int:
        """The trials a sweep starts: ``num_trials`` (default the grid size); the grid sampler stops at the grid."""
        n = self.trials()
        return min(n, self.grid_size()) if self.sampler == "grid" else n

    def points(self) -> list[dict[str, Any]]:
        """Every point of the declared grid, as ``{experiment key: value}``."""
        points: list[dict[str, Any]] = [{}]
        for key, values in self.grid().items():
            points = [{**p, key: v} for p in points for v in values]
        return points


class ResourcesConfig(_Strict):
    cpu: float = Field(1.0, gt=0.0, description="CPUs reserved per trial")
    gpu: float = Field(
        0.0, ge=0.0, description="GPUs per trial; 0.25 packs four trials on one GPU (memory capped per trial)")
    torch_threads: int = Field(1, gt=0, description="torch intra-op threads per trial")
    custom: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources per trial, e.g. {worker: 1} to keep trials off the head")

    @field_validator("custom")
    @classmethod
    def _custom(cls, v):
        bad = [k for k, n in v.items() if not n > 0 or k.upper() in ("CPU", "GPU")]
        if bad:
            raise ValueError(f"custom resources need a positive amount and a name other than cpu/gpu: {bad}")
        return v

    @field_validator("gpu")
    @classmethod
    def _fractional(cls, v):
        if v > 1 and v != int(v):
            raise ValueError("gpu above 1 must be a whole number")
        return v


class OutputConfig(_Strict):
    dir: str = Field("results", description="where experiments go when --storage is not given")
    name: str | None = Field(None, description="experiment name (default: the study name)")


class VerdictConfig(_Strict):
    """How winning tickets are judged — by ``lth-tune analyze``, the report and TensorBoard's HParams verdict
    (:func:`lth_tune.stats.winning_level`; paper 000 §3.3: a subnetwork is a winning ticket when its test
    accuracy is close to the whole network's)."""

    epsilon: float = Field(0.01, ge=0.0, lt=1.0,
                           description="a level is winning when the mean test-accuracy drop from dense is ≤ ε")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="confidence of the intervals over seeds")


class StudyConfig(_Strict):
    name: str = Field(description="study name; the default experiment directory name")
    description: str = Field("", description="free text, kept in study.json")
    experiment: ExperimentConfig = Field(default_factory=ExperimentConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    verdict: VerdictConfig = Field(default_factory=VerdictConfig)

    @model_validator(mode="after")
    def _space_keys(self):
        base = self.experiment
        for key, param in self.search.space.items():
            if not _has_dotted(base.model_dump(), key):
                raise ValueError(f"search.space.{key}: unknown experiment key")
            for v in param.values():
                try:
                    base.with_params({key: v})
                except ValidationError as err:
                    msg = _first_error(err)
                    raise ValueError(f"search.space.{key}: grid value {v!r} is invalid: {msg}") from None
        return self

    @property
    def experiment_name(self) -> str:
        return self.output.name or self.name

    def smoke(self, *, gpus_available: bool) -> StudyConfig:
        """The same study shrunk to check it end to end in minutes on a CPU (``lth-tune sweep --smoke``):
        one grid point (each searched key's first value), one trial, one epoch per training, at most one
        pruning level, every declared measurement at the last level and tiny, 128 training examples, output
        ``<name>_smoke``; GPU requests dropped where no GPU is visible."""
        raw = self.model_dump(mode="json")
        e = raw["experiment"]
        e["train"].update(epochs=1, milestones=[])
        e["pruning"]["levels"] = min(e["pruning"]["levels"], 1)
        for key in ("flatness", "bound", "instability"):
            if e[key]["levels"] != "none":
                e[key]["levels"] = "last"
        if e["controls"]["kinds"]:
            e["controls"]["levels"] = "last"
        e["flatness"].update(trace_iters=2, eig_iters=2, n_batches=1, batch_size=16, sharpness_samples=2,
                             landscape_points=3)
        e["bound"].update(mc_samples=2, steps=2, batch_size=16)
        if e["bound"]["prior_sigmas"]:
            e["bound"]["prior_sigmas"] = e["bound"]["prior_sigmas"][:1]
        e["instability"]["points"] = 3
        pbp = e["pbp"]
        for key in ("prior_epochs", "finetune_epochs", "posterior_epochs"):
            pbp[key] = min(pbp[key], 1)
        pbp.update(milestones=[], mc_samples=4, eval_samples=1)
        e["data"].update(train_subset=128, num_samples=None)
        search = raw["search"]
        search["space"] = {k: {"choice": [v[0]]} for k, v in self.search.grid().items()}
        search.update(sampler="grid", num_trials=1, max_concurrent=1)
        if not gpus_available:
            raw["resources"]["gpu"] = 0.0
        raw["resources"].update(cpu=1.0, torch_threads=1)
        raw["output"]["name"] = f"{self.experiment_name}_smoke"
        return StudyConfig.model_validate(raw)


# --------------------------------------------------------------------------- loading


def _set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        if not isinstance(cur.get(p), dict):
            cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value


def _has_dotted(d: dict, key: str) -> bool:
    cur: Any = d
    for p in key.split("."):
        if not isinstance(cur, dict) or p not in cur:
            return False
        cur = cur[p]
    return True


def _first_error(err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(x) for x in e["loc"])
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        return f"{loc}: unknown key (check spelling; see docs/study-files.md)"
    if e["type"] == "literal_error":
        return f"{loc}: {msg}"
    return f"{loc}: {msg}" if loc else msg


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` → (key, YAML-parsed value)."""
    if "=" not in text:
        raise StudyError(f"--set {text!r}: expected key=value, e.g. --set experiment.train.lr=0.01")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise StudyError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise StudyError(f"--set {key}: value {raw!r} is not valid YAML ({err.__class__.__name__})") from None
    return key, value


def load_study(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    """Read a study YAML (``yaml.safe_load``), apply ``--set key=value`` overrides, validate strictly."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: study file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise StudyError(f"{path}:{where} malformed YAML ({getattr(err, 'problem', err)})") from None
    if raw is None or raw == {}:
        raise StudyError(f"{path}: the study file is empty; write at least an experiment: and a search: section "
                         f"(see search_spaces/l2init.yaml and docs/study-files.md)")
    if not isinstance(raw, dict):
        raise StudyError(f"{path}: a study file must be a mapping with experiment/search/resources/output")
    raw.setdefault("name", path.stem)
    return study_from_dict(raw, overrides, source=str(path))


def study_from_dict(raw: dict, overrides=(), source: str = "<study>") -> StudyConfig:
    raw = copy.deepcopy(raw)
    for text in overrides:
        key, value = parse_override(text)
        if key.startswith("search.space.") and isinstance(value, dict):
            _set_dotted_space(raw, key, value)
        else:
            _set_dotted(raw, key, value)
    try:
        return StudyConfig.model_validate(raw)
    except ValidationError as err:
        raise StudyError(f"{source}: {_first_error(err)}") from None


def _set_dotted_space(raw: dict, key: str, value: dict) -> None:
    # search.space keys themselves contain dots: search.space.<experiment key>
    space = raw.setdefault("search", {}).setdefault("space", {})
    space[key.removeprefix("search.space.")] = value
