"""Seeded index splits: training subsets, the validation hold-out, and paper 004's prior/bound split."""

from __future__ import annotations

import torch

from lth_tune.seeding import generator


def holdout_split(
    n: int, fraction: float, *, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint sorted index tensors ``(kept, held_out)`` covering ``range(n)``, ``|held_out| = round(fraction*n)``."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    k = round(fraction * n)
    perm = torch.randperm(n, generator=generator)
    return perm[k:].sort().values, perm[:k].sort().values


def subset_indices(n: int, size: int | None, *, generator: torch.Generator) -> torch.Tensor:
    """Sorted indices of ``min(size, n)`` examples drawn without replacement (all of them if ``size`` is None)."""
    if size is None or size >= n:
        return torch.arange(n)
    if size <= 0:
        raise ValueError(f"train_subset must be positive, got {size}")
    return torch.randperm(n, generator=generator)[:size].sort().values


def prior_bound_split(n: int, alpha: float, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` into disjoint sorted index tensors ``(S_P, S \\ S_P)`` with ``|S_P| = round(alpha*n)``.

    ``S_P`` trains the data-dependent prior and ``S \\ S_P`` evaluates the bound, ``alpha = |S_P|/|S|``
    in ``[0, 1)`` (paper 004 §5.1, Theorem 1). Fixed by ``seed``.
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    bound, prior = holdout_split(n, alpha, generator=generator(seed, "prior_bound"))
    return prior, bound
