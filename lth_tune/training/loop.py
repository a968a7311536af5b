"""Training and evaluation loops over tensor-resident datasets (``lth_tune.data.batches``)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lth_tune.data import Split, batches
from lth_tune.pruning import masked_in_place
from lth_tune.training.optim import Stepper
from lth_tune.training.regularizers import Regularizer


class DivergedError(RuntimeError):
    """The training loss became NaN/inf; the trial ends as errored with this reason."""


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (eval mode) on ``split``; (nan, nan) if it is empty."""
    if len(split) == 0:
        return math.nan, math.nan
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for x, y in batches(split, batch_size, shuffle=False):
        out = model(x)
        loss_sum += F.cross_entropy(out, y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
    model.train(was_training)
    return loss_sum / len(split), correct / len(split)


def train_epochs(
    model: nn.Module,
    split: Split,
    stepper: Stepper,
    *,
    epochs: int,
    batch_size: int,
    milestones: list[int] = (),
    gamma: float = 0.1,
    generator: torch.Generator | None = None,
    augment: bool = False,
    regularizer: Regularizer | None = None,
    on_iteration: Callable[[int], None] | None = None,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    warmup_iterations: int = 0,
) -> float:
    """SGD-style training with a milestone schedule (lr ×γ at each epoch in ``milestones``) and an optional
    linear warm-up: iteration t (1-based) of the first ``warmup_iterations`` uses lr × t / warmup_iterations
    (Goyal et al. 2017; Frankle et al. 2020 rescue large learning rates with it).

    ``on_iteration(t)`` is called after iteration t (1-based) — IMP uses it to take the rewind snapshot.
    ``autocast_dtype`` (e.g. ``torch.bfloat16``) runs forward/backward under autocast; ``channels_last``
    feeds 4-D batches in channels-last layout (the model must have been converted by the caller).
    Masked layers train inside :func:`lth_tune.pruning.masked_in_place` (pruned weights exactly zero, no gradient).
    Returns the mean training loss of the last epoch. Raises ``DivergedError`` on a non-finite loss.
    """
    scheduler = torch.optim.lr_scheduler.MultiStepLR(stepper.optimizer, milestones=list(milestones), gamma=gamma)
    model.train()
    if regularizer is not None and not regularizer.active:
        regularizer = None  # λ = 0 or kind none: not even a "+ 0.0" per step
    iteration, last = 0, math.nan
    with masked_in_place(model):  # pruned weights stored as zeros, their gradients masked: no product per forward
        for _epoch in range(epochs):
            losses, sizes = [], []  # summed once per epoch: no extra kernel per step
            for x, y in batches(split, batch_size, generator=generator, shuffle=True, augment=augment):

                if channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)

                def closure(x=x, y=y):
                    with (torch.autocast(x.device.type, dtype=autocast_dtype) if autocast_dtype is not None
                          else contextlib.nullcontext()):
                        loss = F.cross_entropy(model(x), y)
                    if regularizer is not None:
                        loss = loss + regularizer(model)
                    return loss

                if iteration < warmup_iterations:
                    scheduled = [g["lr"] for g in stepper.optimizer.param_groups]
                    for g in stepper.optimizer.param_groups:
                        g["lr"] *= (iteration + 1) / warmup_iterations
                    loss = stepper.step(closure)
                    for g, lr in zip(stepper.optimizer.param_groups, scheduled):
                        g["lr"] = lr  # the milestone schedule keeps its own value
                else:
                    loss = stepper.step(closure)
                iteration += 1
                losses.append(loss)
                sizes.append(len(y))
                if on_iteration is not None:
                    on_iteration(iteration)
            scheduler.step()
            values = torch.stack(losses).tolist() if losses else []  # one device sync per epoch, not per step
            last = sum(v * n for v, n in zip(values, sizes)) / max(sum(sizes), 1)
            if not math.isfinite(last):
                raise DivergedError(f"training loss is {last} in epoch {_epoch + 1}: lower the learning rate")
    return last
