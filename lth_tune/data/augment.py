"""Batched data augmentation on whole tensors (no PIL, no per-example Python loop).

Random draws always come from a CPU generator and are then moved to the data's device, so a seeded
run augments identically on CPU and CUDA. On CUDA they travel through pinned memory with non-blocking copies
(:func:`to_device`): a training step never waits for the GPU to finish the previous one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` (a small CPU tensor of random draws) on ``device`` without a host-device synchronisation: a CUDA copy
    from pageable memory waits for every kernel queued before it, a copy from pinned memory does not (the caching
    host allocator keeps the pinned block alive until the copy has run)."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _check_images(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(x.shape)}")


def random_crop_flip(
    x: torch.Tensor,
    padding: int = 4,
    *,
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random crop after zero padding plus random horizontal flip, for a whole batch at once.

    Each example is zero-padded by ``padding`` on every side and an ``H x W`` window is taken at a
    uniformly random offset in ``[0, 2 * padding]^2``; with ``flip`` it is then mirrored left-right
    with probability 1/2. (Zero is the dataset mean after normalisation.) Implemented as two
    ``gather`` calls on the padded batch. Draw order per batch: row offsets, column
    offsets, flips, each of length N.
    """
    _check_images(x)
    n, c, h, w = x.shape
    if n == 0:
        return x.clone()
    span = 2 * padding + 1
    dy = torch.randint(0, span, (n,), generator=generator)
    dx = torch.randint(0, span, (n,), generator=generator)
    rows = dy[:, None] + torch.arange(h)  # (N, H)
    cols = torch.arange(w).expand(n, w)  # (N, W)
    if flip:
        mirror = torch.rand(n, generator=generator) < 0.5
        cols = torch.where(mirror[:, None], cols.flip(1), cols)
    cols = dx[:, None] + cols
    device = x.device
    rows, cols = to_device(rows, device), to_device(cols, device)
    padded = F.pad(x, (padding, padding, padding, padding)) if padding > 0 else x
    # two gathers (rows, then columns) on the padded batch: no per-example Python code
    picked_rows = padded.gather(2, rows[:, None, :, None].expand(n, c, h, padded.shape[3]))
    return picked_rows.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def random_flip(x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2 (one draw per example)."""
    _check_images(x)
    mirror = to_device(torch.rand(x.shape[0], generator=generator) < 0.5, x.device)
    return torch.where(mirror[:, None, None, None], x.flip(-1), x)
