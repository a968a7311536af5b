"""IMP training throughput: our trainer vs a plain PyTorch / OpenLTH-style reference loop.

    python bench/throughput.py [--quick] [--device cpu|cuda] [--workloads resnet20_cifar vgg16_cifar mnist1d_mlp]
                               [--steps N] [--repeats R] [--threads T] [--workers W] [--breakdown] [--no-floor]

Both sides train the same sparse ticket (same architecture, same initial weights, the same masks from
one global magnitude ``prune_step`` of 50%) with batch 128 and SGD (lr 0.1, momentum 0.9, weight decay
1e-4). A timed block is exactly ``steps`` optimiser steps on full batches, data loading, augmentation,
masking, forward, backward and update included.

OURS       the code path ``lth_tune.runs.IMPRun`` trains with: a :class:`lth_tune.data.Split` of
           normalised float tensors on the device, ``lth_tune.training.train_epochs`` (which iterates
           ``lth_tune.data.batches(..., augment=...)``: random crop + flip done on the whole batch at
           once) with a ``make_stepper("sgd", ...)`` stepper; masks are ``torch.nn.utils.prune``
           reparametrisations from ``lth_tune.pruning.attach_masks`` + ``prune_step``, trained inside
           ``lth_tune.pruning.masked_in_place`` (pruned weights stored as zeros, gradients masked by a hook;
           no ``weight_orig * weight_mask`` product per forward).
REFERENCE  what OpenLTH (facebookresearch/open_lth) does: a ``torch.utils.data.Dataset`` of uint8 HWC
           images, each turned into a PIL image and put through ``Compose([RandomCrop(32, padding=4),
           RandomHorizontalFlip(), ToTensor(), Normalize(...)])`` one example at a time, a
           ``DataLoader(batch_size=128, num_workers=0)`` with a shuffling sampler (OpenLTH's
           ``ShuffleSampler``), a ``PrunedModel`` wrapper that does ``param.data *= mask`` for every
           masked parameter before every forward (open_lth/pruning/pruned_model.py), and a plain
           ``zero_grad / model.train() / loss.backward() / torch.optim.SGD.step()`` step
           (open_lth/training/train.py).
FLOOR      the compute floor of OURS: the same masked model (same layout, same precision, the same masking
           path: ``masked_in_place``) doing only ``zero_grad / forward / loss / backward /
           torch.optim.SGD.step()`` on batches already in memory (made, augmented and laid out before the timer
           starts). No data pipeline, no loop bookkeeping. ``ours / floor`` is the fraction of the floor our
           trainer reaches (target >= 90%). UNMASKED is the same step on a plain copy of the network (no
           masks at all), so ``masking`` = 1 - floor img/s / unmasked img/s is what our masking costs per
           step; REPARAM is the same step through torch's reparametrisation (the forward pre-hook's
           ``weight_mask * weight_orig`` and its backward, our path before issue 13), priced the same way.

``num_workers=0`` on the reference side by default: both sides run with ``torch.set_num_threads(1)``,
and a loader worker process would give the reference a second core that ours does not get
(``--workers N`` measures that variant; on a 2-core machine shared with other jobs it is noisy).

Workloads:
  resnet20_cifar  ResNet-20 (width 16), 50% of the conv weights pruned (``fc`` kept, as OpenLTH's
                  default ``pruning_layers_to_ignore='fc.weight'``), augmentation on. CIFAR-10 cannot be
                  downloaded here, so BOTH sides use the same SYNTHETIC CIFAR-shaped data: 5,000 random
                  uint8 32x32x3 images with 10 random labels.
  vgg16_cifar     VGG-16 (OpenLTH cifar_vgg_16), otherwise as resnet20_cifar (same synthetic data, ``fc`` kept).
  mnist1d_mlp     MLP with widths [100, 100] on the real embedded MNIST-1D: on our side
                  ``load_dataset("mnist1d", val_fraction=0)`` (4,000 training examples as device
                  tensors), on the reference side the same 4,000 examples as the numpy array the
                  mnist1d package generates, converted and normalised per example in ``__getitem__``;
                  50% pruned, no augmentation.

Timing: one warm-up block per side, then ``repeats`` timed blocks alternating ours / reference (so a
change in machine load hits both), median images/s per side; ratio = median(ours) / median(reference).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if __package__ in (None, ""):  # `python bench/throughput.py` from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BATCH_SIZE = 128
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 1e-4
PRUNE_FRACTION = 0.5
TARGET_RATIO = 2.0
SYNTHETIC_CIFAR_N = 5000
SEED = 0

WORKLOADS = ("resnet20_cifar", "vgg16_cifar", "mnist1d_mlp")
#: what runs without --workloads (VGG-16 on a CPU: ~1.5 s per step)
DEFAULT_WORKLOADS = ("resnet20_cifar", "mnist1d_mlp")
# timed optimiser steps per block, (full, --quick), per device type
DEFAULT_STEPS = {
    "cpu": {"resnet20_cifar": (10, 2), "vgg16_cifar": (4, 1), "mnist1d_mlp": (300, 20)},
    "cuda": {"resnet20_cifar": (100, 10), "vgg16_cifar": (100, 10), "mnist1d_mlp": (300, 20)},
}
TARGET_FLOOR = 0.9
TARGET_MASKING = 0.05  # issue 13: masking may cost at most 5 % of a step
DEFAULT_REPEATS = (5, 2)  # (full, --quick)

# OpenLTH's CIFAR-10 normalisation (open_lth/datasets/cifar10.py)
OPENLTH_MEAN, OPENLTH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# ============================================================================ the workloads' data
@dataclass
class Workload:
    name: str
    model: str
    model_kw: dict[str, Any]
    ignore: tuple[str, ...]  # layers left unpruned
    augment: bool
    ours_split: Any  # lth_tune.data.Split on the device (our side)
    ref_dataset: torch.utils.data.Dataset  # per-example Dataset (reference side), same examples
    input_shape: tuple[int, ...]
    num_classes: int
    note: str


class CifarLikeDataset(torch.utils.data.Dataset):
    """OpenLTH ``datasets/base.ImageDataset`` + ``cifar10.Dataset``: uint8 HWC array -> PIL -> transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, augment: bool):
        import torchvision.transforms as T

        self.images, self.labels = images, labels
        aug = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if augment else []
        self.transform = T.Compose(aug + [T.ToTensor(), T.Normalize(OPENLTH_MEAN, OPENLTH_STD)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


class ArrayDataset(torch.utils.data.Dataset):
    """Per-example conversion of a float numpy array (ToTensor-style ``from_numpy``) + normalisation."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, y
        self.mean, self.std = float(x.mean()), float(x.std())

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        x = torch.from_numpy(self.x[i]).contiguous()
        return (x - self.mean) / self.std, self.y[i]


def _synthetic_cifar(device: torch.device, model: str = "resnet20") -> Workload:
    from lth_tune.data import Split

    rng = np.random.default_rng(SEED)
    images = rng.integers(0, 256, size=(SYNTHETIC_CIFAR_N, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=SYNTHETIC_CIFAR_N).astype(np.int64)
    # our side: what load_dataset does with a uint8 image dataset (NCHW, /255, per-channel normalise)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device).float().div_(255.0)
    std, mean = torch.std_mean(x, dim=(0, 2, 3), correction=0, keepdim=True)
    x.sub_(mean).div_(std.clamp_min(1e-8))
    return Workload(
        name=f"{model}_cifar", model=model, model_kw={}, ignore=("fc",), augment=True,
        ours_split=Split(x, torch.from_numpy(labels).to(device)),
        ref_dataset=CifarLikeDataset(images, labels, augment=True),
        input_shape=(3, 32, 32), num_classes=10,
        note=f"SYNTHETIC CIFAR-shaped data ({SYNTHETIC_CIFAR_N} random uint8 32x32x3 images, 10 classes; "
        "CIFAR-10 is not downloadable here), random crop + flip on both sides",
    )


def _mnist1d(device: torch.device) -> Workload:
    from lth_tune.data import default_root, load_dataset
    from lth_tune.data.mnist1d import load_mnist1d

    bundle = load_dataset("mnist1d", device=device, seed=SEED, val_fraction=0.0)  # train = all 4000, in order
    raw = load_mnist1d(default_root())  # the same cached arrays load_dataset read
    x_np, y_np = raw.x_train.numpy(), raw.y_train.numpy()
    assert len(y_np) == len(bundle.train) and np.array_equal(y_np, bundle.train.y.cpu().numpy())
    return Workload(
        name="mnist1d_mlp", model="mlp", model_kw={"widths": [100, 100]}, ignore=(), augment=False,
        ours_split=bundle.train, ref_dataset=ArrayDataset(x_np, y_np),
        input_shape=bundle.input_shape, num_classes=bundle.num_classes,
        note=f"real MNIST-1D ({len(y_np)} training examples of length 40), no augmentation",
    )


def make_workload(name: str, device: torch.device) -> Workload:
    if name in ("resnet20_cifar", "vgg16_cifar"):
        return _synthetic_cifar(device, name.removesuffix("_cifar"))
    if name == "mnist1d_mlp":
        return _mnist1d(device)
    raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")


# ============================================================================ the two trainers
def build_ticket(w: Workload, device: torch.device) -> tuple[nn.Module, nn.Module, dict[str, torch.Tensor]]:
    """(our masked model, the reference's plain model with the same weights, masks keyed 'layer.weight')."""
    from lth_tune.models import build_model
    from lth_tune.pruning import attach_masks, density, masks, prune_step

    def fresh() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            return build_model(w.model, input_shape=w.input_shape, num_classes=w.num_classes, **w.model_kw)

    ours = fresh()
    attach_masks(ours, ignore=w.ignore)
    g = torch.Generator()
    g.manual_seed(SEED)
    prune_step(ours, PRUNE_FRACTION, criterion="large_final", strategy="global", generator=g)
    assert abs(density(ours) - (1 - PRUNE_FRACTION)) < 0.01, density(ours)
    ref = fresh()  # same initialisation; prune_step only changed the masks
    mask = {f"{name}.weight": m.detach().clone() for name, m in masks(ours).items()}
    return ours.to(device), ref.to(device), {k: v.to(device) for k, v in mask.items()}


class PrunedModel(nn.Module):
    """OpenLTH ``pruning/pruned_model.PrunedModel``: multiply each masked weight by its mask before every
    forward (in place, through ``.data``)."""

    @staticmethod
    def to_mask_name(name: str) -> str:
        return "mask_" + name.replace(".", "___")

    def __init__(self, model: nn.Module, mask: dict[str, torch.Tensor]):
        super().__init__()
        self.model = model
        for k, v in mask.items():
            self.register_buffer(PrunedModel.to_mask_name(k), v.float())
        self._apply_mask()

    def _apply_mask(self) -> None:
        for name, param in self.model.named_parameters():
            if hasattr(self, PrunedModel.to_mask_name(name)):
                param.data *= getattr(self, PrunedModel.to_mask_name(name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._apply_mask()
        return self.model(x)


class SubsetShuffleSampler(torch.utils.data.Sampler):
    """OpenLTH's ``ShuffleSampler``, over the indices of the current timed block (set before each block)."""

    def __init__(self, generator: torch.Generator):
        self.indices: list[int] = []
        self.generator = generator

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        perm = torch.randperm(len(self.indices), generator=self.generator).tolist()
        return iter([self.indices[i] for i in perm])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Side:
    """One trainer: ``run(indices)`` trains one step per 128 of ``indices`` and returns
    (wall-clock seconds, CPU seconds of this process)."""

    name: str
    run: Callable[[torch.Tensor], tuple[float, float]]
    data_only: Callable[[torch.Tensor], tuple[float, float]]
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)


PRECISIONS = ("fp32", "bf16")


def ours_side(w: Workload, model: nn.Module, device: torch.device, precision: str = "fp32") -> Side:
    """Our trainer exactly as IMPRun runs it: channels-last for 2-D conv nets (the default of
    ``train.channels_last``) and ``train.precision`` (bf16 = bfloat16 autocast, fp32 weights/updates)."""
    from lth_tune.data import batches
    from lth_tune.training import make_stepper, train_epochs

    channels_last = any(isinstance(m, nn.Conv2d) for m in model.modules())
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    autocast = torch.bfloat16 if precision == "bf16" else None
    stepper = make_stepper("sgd", model, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    gen = torch.Generator()
    gen.manual_seed(SEED + 1)

    def run(idx: torch.Tensor) -> float:
        split = w.ours_split.subset(idx.to(w.ours_split.device))  # the block's examples (not timed)
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        # exactly what IMPRun._train does for one epoch (regularizer off; the loop syncs once per epoch)
        train_epochs(model, split, stepper, epochs=1, batch_size=BATCH_SIZE, generator=gen, augment=w.augment,
                     autocast_dtype=autocast, channels_last=channels_last)
        _sync(device)
        return time.perf_counter() - t0, time.process_time() - c0

    def data_only(idx: torch.Tensor) -> float:
        split = w.ours_split.subset(idx.to(w.ours_split.device))
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        for _x, _y in batches(split, BATCH_SIZE, generator=gen, shuffle=True, augment=w.augment):
            pass
        _sync(device)
        return time.perf_counter() - t0, time.process_time() - c0

    return Side("ours", run, data_only)


def reference_side(w: Workload, model: nn.Module, mask: dict[str, torch.Tensor], device: torch.device,
                   workers: int) -> Side:
    pruned = PrunedModel(model, mask)
    optimizer = torch.optim.SGD(pruned.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    gen = torch.Generator()
    gen.manual_seed(SEED + 1)
    sampler = SubsetShuffleSampler(gen)
    loader = torch.utils.data.DataLoader(
        w.ref_dataset, batch_size=BATCH_SIZE, sampler=sampler, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
    )

    def run(idx: torch.Tensor) -> float:
        sampler.indices = idx.tolist()
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        for examples, labels in loader:  # open_lth/training/train.py, one iteration
            examples = examples.to(device=device, non_blocking=True)
            labels = labels.to(device=device, non_blocking=True).long()
            optimizer.zero_grad()
            pruned.train()
            loss = F.cross_entropy(pruned(examples), labels)
            loss.backward()
            optimizer.step()
        _sync(device)
        return time.perf_counter() - t0, time.process_time() - c0

    def data_only(idx: torch.Tensor) -> float:
        sampler.indices = idx.tolist()
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        for examples, _labels in loader:
            examples = examples.to(device=device, non_blocking=True)
        _sync(device)
        return time.perf_counter() - t0, time.process_time() - c0

    return Side("reference", run, data_only)


FLOOR_MASKING = {"floor": "masked_in_place", "unmasked": "none", "reparam": "torch's reparametrisation"}


def floor_side(w: Workload, model: nn.Module, device: torch.device, precision: str = "fp32",
               masking: str = "floor") -> Side:
    """The compute floor of ``ours_side``: the same model, layout and precision; only zero_grad, forward, loss,
    backward and ``torch.optim.SGD.step()`` are timed, on batches made (and augmented) before the timer starts.
    ``masking`` (:data:`FLOOR_MASKING`): ``floor`` masks as our trainer does (``masked_in_place``),
    ``unmasked`` is a plain copy of the network (weights already masked, no masks at all), ``reparam`` runs
    every forward through torch's ``weight_mask * weight_orig`` pre-hook."""
    from lth_tune.data import batches
    from lth_tune.pruning import copy_model, effective_weights, masked_in_place, masked_layers

    model = copy_model(model)
    if masking == "unmasked":
        weights = effective_weights(model)
        for name, module in masked_layers(model):
            torch.nn.utils.prune.remove(module, "weight")
            with torch.no_grad():
                module.weight.copy_(weights[name])
    channels_last = any(isinstance(m, nn.Conv2d) for m in model.modules())
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    autocast = torch.bfloat16 if precision == "bf16" else None
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    gen = torch.Generator()
    gen.manual_seed(SEED + 1)

    def run(idx: torch.Tensor) -> tuple[float, float]:
        split = w.ours_split.subset(idx.to(w.ours_split.device))
        ready = [(x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x, y)
                 for x, y in batches(split, BATCH_SIZE, generator=gen, shuffle=True, augment=w.augment)]
        model.train()
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        with masked_in_place(model) if masking == "floor" else contextlib.nullcontext():
            for x, y in ready:
                optimizer.zero_grad(set_to_none=True)
                with (torch.autocast(device.type, dtype=autocast) if autocast is not None
                      else contextlib.nullcontext()):
                    loss = F.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
        _sync(device)
        return time.perf_counter() - t0, time.process_time() - c0

    return Side(masking, run, run)


def block_indices(n: int, count: int, gen: torch.Generator) -> torch.Tensor:
    """``count`` example indices drawn from ``range(n)`` without replacement (whole permutations
    concatenated when ``count > n``)."""
    perms = [torch.randperm(n, generator=gen) for _ in range(math.ceil(count / n))]
    return torch.cat(perms)[:count]


# ============================================================================ measurement
def measure(
    workload: str,
    *,
    steps: int,
    repeats: int,
    device: torch.device,
    workers: int = 0,
    breakdown: bool = False,
    precision: str = "fp32",
    floor: bool = True,
) -> dict[str, Any]:
    w = make_workload(workload, device)
    ours_model, ref_model, mask = build_ticket(w, device)
    floors = [floor_side(w, ours_model, device, precision, masking) for masking in FLOOR_MASKING]
    sides = [ours_side(w, ours_model, device, precision), reference_side(w, ref_model, mask, device, workers),
             *(floors if floor else [])]
    gen = torch.Generator()
    gen.manual_seed(SEED + 2)
    n, count = len(w.ours_split), steps * BATCH_SIZE
    warm = block_indices(n, max(2, min(steps, 5)) * BATCH_SIZE, gen)
    for s in sides:
        s.run(warm)
    for rep in range(repeats):
        idx = block_indices(n, count, gen)
        # sides alternate, and their order reverses every other block: load changes on the shared machine, and
        # what one side leaves in the caches, hit every side alike
        for s in (sides if rep % 2 == 0 else sides[::-1]):
            wall, cpu = s.run(idx)
            s.times.append(wall)
            s.cpu_times.append(cpu)
    ours, ref = (count / statistics.median(s.times) for s in sides[:2])
    ours_cpu, ref_cpu = (count / statistics.median(s.cpu_times) for s in sides[:2])
    result = {
        "workload": workload if precision == "fp32" else f"{workload} {precision}",
        "ours_img_s": ours,
        "ref_img_s": ref,
        "ratio": ours / ref,
        "pair_ratios": [tr / to for to, tr in zip(sides[0].times, sides[1].times)],
        # images per CPU-second of this process: insensitive to other jobs preempting us on a shared
        # machine (meaningful for num_workers=0 on CPU, where all work runs in this process)
        "ours_img_cpu_s": ours_cpu,
        "ref_img_cpu_s": ref_cpu,
        "cpu_ratio": ours_cpu / ref_cpu,
        "ours_ms_step": 1e3 * statistics.median(sides[0].times) / steps,
        "ref_ms_step": 1e3 * statistics.median(sides[1].times) / steps,
        "steps": steps,
        "repeats": repeats,
        "note": w.note,
    }
    if floor:
        fl, unmasked, reparam = (count / statistics.median(s.times) for s in sides[2:])
        fl_cpu, unmasked_cpu, reparam_cpu = (count / statistics.median(s.cpu_times) for s in sides[2:])
        result.update(
            floor_img_s=fl, unmasked_img_s=unmasked, reparam_img_s=reparam,
            of_floor=ours / fl, of_floor_cpu=ours_cpu / fl_cpu,
            # the same block's ours vs floor (they alternate), min-max over blocks
            floor_block_fractions=[tf / to for to, tf in zip(sides[0].times, sides[2].times)],
            masking=1 - fl / unmasked, masking_cpu=1 - fl_cpu / unmasked_cpu,
            reparam_masking=1 - reparam / unmasked, reparam_masking_cpu=1 - reparam_cpu / unmasked_cpu,
            floor_ms_step=1e3 * statistics.median(sides[2].times) / steps,
        )
    if breakdown:
        for s in sides[:2]:
            t = [s.data_only(block_indices(n, count, gen)) for _ in range(repeats)]
            key = "ours" if s.name == "ours" else "ref"
            result[f"{key}_data_ms_step"] = 1e3 * statistics.median(wall for wall, _ in t) / steps
            result[f"{key}_data_cpu_ms_step"] = 1e3 * statistics.median(cpu for _, cpu in t) / steps
    return result


def run(
    workloads: Sequence[str] = DEFAULT_WORKLOADS,
    *,
    steps: int | None = None,
    repeats: int | None = None,
    quick: bool = False,
    device: str = "cpu",
    threads: int = 1,
    workers: int = 0,
    breakdown: bool = False,
    precisions: Sequence[str] = ("fp32",),
    floor: bool = True,
) -> list[dict[str, Any]]:
    """Measure every workload; ``steps`` / ``repeats`` override the per-workload defaults."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda but no GPU is visible")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = []
        for name in workloads:
            if name not in WORKLOADS:
                raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
            s = steps if steps is not None else DEFAULT_STEPS[dev.type][name][int(quick)]
            r = repeats if repeats is not None else DEFAULT_REPEATS[int(quick)]
            for precision in precisions:
                out.append(measure(name, steps=s, repeats=r, device=dev, workers=workers, breakdown=breakdown,
                                   precision=precision, floor=floor))
        return out
    finally:
        torch.set_num_threads(previous)


def _met(wall: bool, cpu: bool) -> str:
    """A target's verdict from the wall-clock and the CPU-time measurement."""
    return "MET" if wall and cpu else "not met" if not (wall or cpu) else "met by CPU time only" if cpu else \
        "met by wall only"


def _verdict(r: dict[str, Any]) -> str:
    return _met(r["ratio"] >= TARGET_RATIO, r["cpu_ratio"] >= TARGET_RATIO)


def format_table(results: list[dict[str, Any]]) -> str:
    head = (f"{'workload':<21}{'ours img/s':>11}{'ref img/s':>11}{'ratio':>7}  {'block ratios':<12}"
            f"{'ours img/CPU-s':>15}{'ref img/CPU-s':>14}{'CPU ratio':>10}  target >= {TARGET_RATIO:g}x")
    lines = [head, "-" * (len(head) + 8)]
    for r in results:
        pr = r["pair_ratios"]
        lines.append(
            f"{r['workload']:<21}{r['ours_img_s']:>11.0f}{r['ref_img_s']:>11.0f}{r['ratio']:>6.2f}x  "
            f"{min(pr):>4.2f}-{max(pr):<7.2f}{r['ours_img_cpu_s']:>15.0f}{r['ref_img_cpu_s']:>14.0f}"
            f"{r['cpu_ratio']:>9.2f}x  {_verdict(r)}"
        )
    lines.append("")
    lines.append("ms per training step (median), wall clock:")
    for r in results:
        lines.append(f"  {r['workload']:<16} ours {r['ours_ms_step']:9.2f}   reference {r['ref_ms_step']:9.2f}")
    if any("of_floor" in r for r in results):
        lines.append("")
        lines.append(format_floor(results))
    if any("ours_data_ms_step" in r for r in results):
        lines.append("data pipeline alone (batching + augmentation, no training), ms per batch, wall / CPU:")
        for r in results:
            lines.append(f"  {r['workload']:<16} ours {r['ours_data_ms_step']:6.2f} / {r['ours_data_cpu_ms_step']:6.2f}"
                         f"   reference {r['ref_data_ms_step']:6.2f} / {r['ref_data_cpu_ms_step']:6.2f}")
    return "\n".join(lines)


def format_floor(results: list[dict[str, Any]]) -> str:
    """Ours as a fraction of the compute floor (same masked model, batches already in memory), and masking's cost."""
    head = (f"{'workload':<21}{'ours img/s':>11}{'floor img/s':>12}{'ours/floor':>11}  {'blocks':<11}"
            f"{'CPU-time':>9}{'floor ms/step':>14}{'masking':>9}{'(CPU)':>7}{'reparam':>9}{'(CPU)':>7}"
            f"  target >= {TARGET_FLOOR:.0%}, masking <= {TARGET_MASKING:.0%}")
    title = ("compute floor: the same masked model doing only zero_grad / forward / backward / SGD step on batches "
             "already in memory")
    lines = [title, head, "-" * (len(head) + 6)]
    for r in results:
        if "of_floor" not in r:
            continue
        fb = r["floor_block_fractions"]
        verdict = (_met(r["of_floor"] >= TARGET_FLOOR, r["of_floor_cpu"] >= TARGET_FLOOR) + ", masking "
                   + _met(r["masking"] <= TARGET_MASKING, r["masking_cpu"] <= TARGET_MASKING))
        lines.append(f"{r['workload']:<21}{r['ours_img_s']:>11.0f}{r['floor_img_s']:>12.0f}{r['of_floor']:>10.1%}  "
                     f"{min(fb):>4.0%}-{max(fb):<6.0%}{r['of_floor_cpu']:>9.1%}{r['floor_ms_step']:>14.2f}"
                     f"{r['masking']:>9.1%}{r['masking_cpu']:>7.1%}{r['reparam_masking']:>9.1%}"
                     f"{r['reparam_masking_cpu']:>7.1%}  {verdict}")
    lines.append("ours/floor = median ours img/s / median floor img/s (wall; 'blocks': min-max of the per-block "
                 "fractions, ours and floor alternate;\nCPU-time: the same in CPU seconds of this process); masking "
                 "= 1 - floor img/s / img/s of the same step without masks (our masking: masked_in_place);\n"
                 "reparam = the same for torch's weight_orig * weight_mask pre-hook (the path before issue 13)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few steps and repeats (smoke test)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--workloads", nargs="+", default=list(DEFAULT_WORKLOADS), choices=list(WORKLOADS))
    p.add_argument("--steps", type=int, default=None, help="timed steps per block (default per workload)")
    p.add_argument("--repeats", type=int, default=None, help="timed blocks per side (median is reported)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for both sides")
    p.add_argument("--workers", type=int, default=0, help="reference DataLoader num_workers")
    p.add_argument("--breakdown", action="store_true", help="also time the data pipelines alone")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                   help="our trainer's train.precision values to measure (reference is always fp32)")
    p.add_argument("--no-floor", dest="floor", action="store_false", help="skip the compute-floor sides")
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    a = p.parse_args(argv)

    print(f"IMP training throughput, batch {BATCH_SIZE}, {PRUNE_FRACTION:.0%} pruned (global magnitude), "
          f"SGD lr {LR} momentum {MOMENTUM} wd {WEIGHT_DECAY}")
    print(f"device {a.device}, torch.set_num_threads({a.threads}) for both sides, reference DataLoader "
          f"num_workers={a.workers}; torch {torch.__version__}")
    print("ours: the IMP trainer (channels-last for 2-D conv nets); 'bf16' rows = train.precision: bf16 "
          "(bfloat16 autocast; weights, masks, updates fp32)")
    results = run(a.workloads, steps=a.steps, repeats=a.repeats, quick=a.quick, device=a.device,
                  threads=a.threads, workers=a.workers, breakdown=a.breakdown, precisions=a.precisions,
                  floor=a.floor)
    for r in results:
        print(f"  {r['workload']}: {r['note']}; {r['repeats']} timed blocks of {r['steps']} steps per side")
    print()
    print(format_table(results))
    print("\nratio = median ours img/s / median reference img/s (wall clock); block ratios = min-max of the "
          "per-block wall-clock ratios (ours and reference blocks alternate);\nimg/CPU-s and CPU ratio = the "
          "same measured in CPU seconds of this process: robust to other jobs preempting us on a shared "
          "machine\n(meaningful on CPU with num_workers=0, where all the work runs in this process)")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
