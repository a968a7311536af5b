"""Per-channel input standardisation: x ← (x − mean) / std with the statistics of a reference split."""

from __future__ import annotations

import dataclasses

import torch

from lth_tune.data.bundle import DataBundle, Split

__all__ = ["channel_stats", "standardize_with"]


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` per channel (dim 1) over every other dimension, shaped to broadcast against ``x``;
    std is the population std, floored at 1e-8."""
    dims = [d for d in range(x.dim()) if d != 1]
    std, mean = torch.std_mean(x, dim=dims, correction=0, keepdim=True)
    return mean, std.clamp_min(1e-8)


def standardize_with(data: DataBundle, reference: Split) -> DataBundle:
    """A copy of ``data`` whose inputs are standardised per channel with the statistics of ``reference``.

    ``load_dataset`` standardises with the statistics of all of S; re-standardising with those of S_P makes the
    composite preprocessing exactly "standardise with S_P's mean and std" (an affine map of an affine map), so
    the prior, preprocessing included, depends on S_P only (paper 004 Theorem 1 requires P independent of
    S \\ S_P)."""
    mean, std = channel_stats(reference.x)

    def restd(split: Split) -> Split:
        return Split((split.x - mean) / std, split.y)

    return dataclasses.replace(data, train=restd(data.train), val=restd(data.val), test=restd(data.test))
