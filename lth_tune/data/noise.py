"""Symmetric label noise (paper 000 §3.1)."""

from __future__ import annotations

import torch


def flip_labels(
    y: torch.Tensor, fraction: float, num_classes: int, *, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip exactly ``round(fraction * len(y))`` labels, each to a different class chosen uniformly.

    Paper 000 §3.1 trains on a training set whose labels are "randomly flipped" with some
    probability; here the flipped examples are a uniformly random subset of fixed size and each gets
    ``(y + k) mod num_classes`` with ``k`` uniform in ``{1, ..., num_classes - 1}``, i.e. a uniformly
    chosen *other* class. Returns ``(noisy_labels, flipped_mask)``; ``y`` is not modified.
    Draws come from ``generator`` (CPU), so the flips are fixed by its seed.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"label_noise must be in [0, 1], got {fraction}")
    n = int(y.shape[0])
    k = round(fraction * n)
    flipped = torch.zeros(n, dtype=torch.bool)
    if k == 0:
        return y.clone(), flipped.to(y.device)
    if num_classes < 2:
        raise ValueError("label noise needs at least two classes")
    idx = torch.randperm(n, generator=generator)[:k]
    shift = torch.randint(1, num_classes, (k,), generator=generator)
    noisy = y.clone().cpu()
    noisy[idx] = (noisy[idx] + shift) % num_classes
    flipped[idx] = True
    return noisy.to(y.device), flipped.to(y.device)
