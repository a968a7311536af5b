"""``lth-tune plan``: what a study costs before it starts — trials, level trainings, epochs, checkpoint storage,
and device-hours from a short timing of the study's own training step (or a given seconds-per-epoch).

Counting (per trial, from the experiment configuration of each declared grid point):

* IMP: level trainings = ticket levels + one per declared control and level + one instability copy per
  declared level; epochs = trainings × ``train.epochs`` (× 2 for SAM: two forward/backward passes a step).
* PBP: epochs of the three stages on their splits (α|S| for the prior stages, |S| for the posterior); PFT adds
  the two fine-tunings of stage 3.
* Measurements (flatness, certificates, instability lines) in *epoch-equivalents*: a forward pass costs a
  third of a training step, a Hessian-vector product two. These are estimates; the training epochs are exact.
* Checkpoints: the ones a trial keeps (``checkpoints_to_keep`` + the latest) × their size (IMP: 4 bytes a
  parameter, 1 a mask entry; PBP: the prior and posterior distributions).

Time: one epoch is timed by running ``steps`` training steps of the study's model, optimiser, batch size and
augmentation on synthetic inputs of the dataset's shape on ``device`` (no dataset needed), then scaled to the
steps of an epoch. Several trials packed on one GPU run at a throughput ``packing_gain`` times one trial's
(measured by ``make gpu-check``; an assumption here, printed as such).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from lth_tune.config import ExperimentConfig, LevelSpec, StudyConfig
from lth_tune.data import DATASETS, Split
from lth_tune.models import build_model, count_parameters, prunable_layers
from lth_tune.pruning import attach_masks
from lth_tune.training import make_stepper, train_epochs

from . import checkpoints_to_keep
from .setup import resolve_device

__all__ = ["StudyPlan", "TrialWork", "plan_study", "time_epoch", "trial_work"]

FORWARD = 1 / 3  # a forward pass, in training steps
HVP = 2.0        # a Hessian-vector product, in training steps


@dataclass
class TrialWork:
    trainings: int = 0              # level trainings (ticket levels, controls, instability copies)
    epochs: float = 0.0             # training epochs (SAM counts twice)
    measure_epochs: float = 0.0     # epoch-equivalents of measurements (estimated)
    checkpoints: int = 0            # checkpoints kept
    checkpoint_bytes: int = 0       # bytes of one checkpoint


@dataclass
class StudyPlan:
    name: str
    trials: int
    grid_size: int
    work: TrialWork                 # summed over the trials
    device: str
    epoch_seconds: float | None
    timing_note: str
    gpus: int
    per_gpu: int
    packing_gain: float
    unit: str = "GPU"               # what one device is: a GPU, or a CPU trial slot
    notes: list[str] = field(default_factory=list)
    device_seconds: float | None = None  # Σ over trials of epochs × seconds per epoch of the trial's model

    @property
    def total_epochs(self) -> float:
        return self.work.epochs + self.work.measure_epochs

    @property
    def storage_bytes(self) -> int:
        return self.work.checkpoint_bytes

    @property
    def exclusive_hours(self) -> float | None:
        if self.device_seconds is not None:
            return self.device_seconds / 3600
        return None if self.epoch_seconds is None else self.total_epochs * self.epoch_seconds / 3600

    @property
    def packed_hours(self) -> float | None:
        h = self.exclusive_hours
        return None if h is None else h / self.packing_gain

    @property
    def wall_hours(self) -> float | None:
        h = self.packed_hours
        return None if h is None else h / self.gpus

    def summary_line(self) -> str:
        """The one line ``sweep`` prints before it launches."""
        text = (f"plan: {self.trials} trials, {self.work.trainings} level trainings, {self.work.epochs:,.0f} epochs "
                f"(+{self.work.measure_epochs:,.0f} epoch-equivalents of measurements), checkpoints "
                f"{_size(self.storage_bytes)}")
        if self.exclusive_hours is not None:
            text += f", ≈{_hours(self.exclusive_hours)} on one {self.unit} at {self.epoch_seconds:.2f} s/epoch"
        return text

    def report(self) -> str:
        unit = self.unit
        w = self.work
        lines = [
            f"study {self.name}: {self.trials} trials (declared grid K = {self.grid_size})",
            f"  level trainings  {w.trainings:,} ({w.trainings / max(self.trials, 1):.1f} per trial)",
            (f"  epochs           {w.epochs:,.0f} training + {w.measure_epochs:,.0f} epoch-equivalents of "
             f"measurements (flatness, certificates, instability; estimated)"),
            f"  checkpoints      {w.checkpoints:,} kept, {_size(w.checkpoint_bytes)} in all (plus Tune's logs)",
        ]
        if self.epoch_seconds is None:
            lines.append("  time             give --epoch-seconds S, or run plan where the study will train")
        else:
            lines.append(f"  epoch            {self.epoch_seconds:.2f} s ({self.timing_note})")
            lines.append(f"  {unit}-hours  {self.exclusive_hours:,.1f} with one trial per {unit}")
            if self.per_gpu > 1:
                lines.append(f"                   {self.packed_hours:,.1f} with {self.per_gpu} trials per {unit} at a "
                             f"throughput gain of {self.packing_gain:g}× (assumed; make gpu-check measures it)")
            lines.append(f"  wall time        ≈{_hours(self.wall_hours)} on {self.gpus} × {unit} (a lower bound: "
                         f"the last trials may leave some idle)")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _hours(h: float) -> str:
    return f"{h * 60:.0f} min" if h < 1 else f"{h:,.1f} h"


def _count(spec: LevelSpec, levels: int) -> int:
    n = levels + 1
    if spec == "none":
        return 0
    if spec == "all":
        return n
    if spec == "last":
        return 1
    return sum(1 for lv in spec if 0 <= lv < n)


def train_size(cfg: ExperimentConfig) -> int:
    """|S|: the training split's size after the subset and the validation hold-out."""
    d = cfg.data
    n = d.num_samples or DATASETS[d.dataset].train_size
    if d.train_subset:
        n = min(n, d.train_subset)
    return n - round(d.val_fraction * n)


def _model(cfg: ExperimentConfig) -> torch.nn.Module:
    spec = DATASETS[cfg.data.dataset]
    return build_model(cfg.model.name, input_shape=spec.input_shape, num_classes=spec.num_classes,
                       **cfg.model.options())


def trial_work(cfg: ExperimentConfig, *, params: int | None = None, prunable: int | None = None) -> TrialWork:
    """The work of one trial of ``cfg`` (see the module docstring)."""
    if params is None or prunable is None:
        model = _model(cfg)
        params = count_parameters(model)
        prunable = sum(m.weight.numel() for _, m in prunable_layers(model))
    n = max(train_size(cfg), 1)
    w = TrialWork()
    kept = checkpoints_to_keep(cfg) + 1
    if cfg.kind == "pbp":
        p = cfg.pbp
        a = p.alpha if p.mode == "pbp" else 1.0
        w.trainings = 3
        w.epochs = a * (p.prior_epochs + p.finetune_epochs) + p.posterior_epochs
        if p.mode == "pft":
            w.epochs += 2 * p.prior_epochs  # the PFT mask and the one-shot baseline, fine-tuned alike
        n_bound = round((1 - p.alpha) * n) if p.mode == "pbp" else 0
        draws = p.mc_passes * 10 if p.mc_mode == "per_example" else p.mc_samples  # a per-example mask ≈ 10 forwards
        certs = 2 * draws * n_bound if p.mode == "pbp" else 0
        evals = 3 * 2 * p.eval_samples * (n + 2 * round(0.1 * n))
        if p.noise_variances:  # weight-noise robustness on S: 3 networks, clean + each variance × draws
            evals += 3 * (1 + len(p.noise_variances) * p.noise_draws) * n
        w.measure_epochs = (certs + evals) * FORWARD / n
        w.checkpoint_bytes = 4 * params * 3 + 8 * prunable * 2
        w.checkpoints = kept
    else:
        levels = cfg.pruning.levels
        factor = 2 if cfg.train.optimizer == "sam" else 1
        controls = len(cfg.controls.kinds) * sum(
            1 for lv in range(1, levels + 1) if _count_level(cfg.controls.levels, lv, levels))
        copies = _count(cfg.instability.levels, levels)
        w.trainings = levels + 1 + controls + copies
        w.epochs = w.trainings * cfg.train.epochs * factor
        f, b = cfg.flatness, cfg.bound
        seen = f.n_batches * f.batch_size
        flat = (f.trace_iters * f.trace + f.eig_iters * (f.top_eig or f.landscape)) * HVP * seen
        flat += (f.landscape_points * f.landscape + 2 * f.sharpness_samples * (f.sharpness_sigma is not None)) \
            * FORWARD * seen
        J = len(b.sigma_grid())
        draws = 2 * b.mc_passes if b.mc_mode == "per_example" else b.mc_samples  # local reparam.: 2 matmuls
        per_sigma = 2 * ((27 + 13) * 4 * min(n, 2048) * FORWARD + b.steps * b.batch_size
                         + draws * n * FORWARD + b.mc_samples * 1000 * FORWARD)
        inst = cfg.instability.points * 2 * n * FORWARD
        w.measure_epochs = (_count(f.levels, levels) * flat + _count(b.levels, levels) * J * per_sigma
                            + copies * inst) / n
        w.checkpoint_bytes = 4 * params + prunable + (4 * params if cfg.pruning.rewind_iteration else 0)
        w.checkpoints = kept
    w.checkpoint_bytes *= kept
    return w


def _count_level(spec: LevelSpec, level: int, levels: int) -> bool:
    if spec == "none":
        return False
    if spec == "all":
        return True
    if spec == "last":
        return level == levels
    return level in spec


def time_epoch(cfg: ExperimentConfig, device: torch.device, steps: int = 20, threads: int = 1) -> tuple[float, str]:
    """Seconds per epoch of the study's training step on ``device`` with ``threads`` torch threads (a trial's),
    from the fastest of three runs of ``steps`` steps on synthetic inputs of the dataset's shape (after two
    warm-up steps), scaled to ``ceil(|S| / batch)`` steps."""
    spec = DATASETS[cfg.data.dataset]
    t = cfg.train
    torch.manual_seed(0)
    model = _model(cfg).to(device)
    attach_masks(model, ignore=cfg.pruning.ignore)
    channels_last = t.channels_last if t.channels_last is not None else any(
        isinstance(m, torch.nn.Conv2d) for m in model.modules())
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    augment = cfg.data.augment if cfg.data.augment is not None else spec.augment
    stepper = make_stepper(t.optimizer, model, lr=1e-3, momentum=t.momentum, rho=t.rho, b=t.nvrm_b)

    def run(k: int) -> float:
        x = torch.randn(k * t.batch_size, *spec.input_shape, device=device)
        y = torch.randint(0, spec.num_classes, (k * t.batch_size,), device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        train_epochs(model, Split(x, y), stepper, epochs=1, batch_size=t.batch_size, augment=augment,
                     autocast_dtype=torch.bfloat16 if t.precision == "bf16" else None, channels_last=channels_last)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run(2)
        per_step = min(run(steps) for _ in range(3)) / steps
    finally:
        torch.set_num_threads(saved)
    per_epoch = math.ceil(train_size(cfg) / t.batch_size)
    note = (f"timed: {steps} steps of {cfg.model.name}, batch {t.batch_size}, {t.optimizer}, {t.precision} on "
            f"{device}, {threads} torch thread(s); {per_epoch} steps an epoch")
    return per_step * per_epoch, note


def plan_study(study: StudyConfig, *, epoch_seconds: float | None = None, device: str | None = None,
               time_it: bool = True, gpus: int = 1, per_gpu: int | None = None,
               packing_gain: float | None = None, steps: int = 20,
               seconds_by_model: dict[str, float] | None = None) -> StudyPlan:
    """The plan of ``study`` (every declared grid point counted once per trial that would run it).

    ``seconds_by_model`` gives seconds per epoch for each model name (a study that searches the model);
    otherwise ``epoch_seconds`` (or a timing here) applies to every trial."""
    points = study.search.points()
    trials = study.search.trials_to_run()
    total = TrialWork()
    device_seconds = 0.0 if seconds_by_model else None
    cache: dict[tuple, tuple[int, int]] = {}
    for point in points:
        cfg = study.experiment.with_params(point)
        key = (cfg.model.name, str(cfg.model.options()), cfg.data.dataset)
        if key not in cache:
            m = _model(cfg)
            cache[key] = (count_parameters(m), sum(x.weight.numel() for _, x in prunable_layers(m)))
        w = trial_work(cfg, params=cache[key][0], prunable=cache[key][1])
        if seconds_by_model:
            device_seconds += (w.epochs + w.measure_epochs) * seconds_by_model[cfg.model.name]
        for attr in ("trainings", "epochs", "measure_epochs", "checkpoints", "checkpoint_bytes"):
            setattr(total, attr, getattr(total, attr) + getattr(w, attr))
    scale = trials / len(points)  # fewer trials than grid points: the average point
    for attr in ("trainings", "checkpoints", "checkpoint_bytes"):
        setattr(total, attr, round(getattr(total, attr) * scale))
    total.epochs *= scale
    total.measure_epochs *= scale
    if device_seconds is not None:
        device_seconds *= scale
    dev = torch.device(device) if device else resolve_device(study.experiment.device)
    r = study.resources
    per = per_gpu if per_gpu is not None else (max(1, round(1 / r.gpu)) if 0 < r.gpu < 1 else 1)
    gain = packing_gain if packing_gain is not None else (min(per, 2.5) if per > 1 else 1.0)
    note = "given"
    unit = "GPU" if dev.type == "cuda" or (epoch_seconds is not None and r.gpu > 0) else "CPU trial slot"
    if seconds_by_model:
        note = "assumed per model: " + ", ".join(f"{m} {t:g} s" for m, t in seconds_by_model.items())
        epoch_seconds = (device_seconds or 0.0) / max(total.epochs + total.measure_epochs, 1e-9)
    elif epoch_seconds is None and time_it:
        cfg = study.experiment.with_params(points[0])
        epoch_seconds, note = time_epoch(cfg, dev, steps=steps, threads=study.resources.torch_threads)
    notes = []
    if len(points) > 1 and len({study.experiment.with_params(p).model.name for p in points}) > 1:
        notes.append("the timing uses the first grid point's model; other models may train faster or slower")
    return StudyPlan(study.name, trials, study.search.grid_size(), total, str(dev), epoch_seconds, note,
                     gpus, per, gain, unit, notes, device_seconds)

