"""Validation hold-out, training subsets and paper 004's prior/bound split."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lth_tune.data import Split, batches, load_dataset, prior_bound_split
from lth_tune.data.splits import holdout_split, subset_indices
from lth_tune.seeding import generator


def _assert_partition(a: torch.Tensor, b: torch.Tensor, n: int) -> None:
    assert a.dtype == torch.int64 and b.dtype == torch.int64
    both = torch.cat([a, b])
    assert len(both) == n and torch.equal(both.sort().values, torch.arange(n))


@pytest.mark.parametrize("n", [0, 1, 7, 1000])
@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.4, 0.5, 0.8, 0.99])
def test_prior_bound_split_sizes(n: int, alpha: float) -> None:
    prior, bound = prior_bound_split(n, alpha, seed=0)
    assert len(prior) == round(alpha * n)
    _assert_partition(prior, bound, n)


def test_prior_bound_split_seeded_and_validated() -> None:
    a = prior_bound_split(100, 0.6, seed=3)
    b = prior_bound_split(100, 0.6, seed=3)
    c = prior_bound_split(100, 0.6, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError):
            prior_bound_split(100, bad, seed=0)


def test_holdout_and_subset_indices() -> None:
    kept, held = holdout_split(50, 0.2, generator=generator(0, "val"))
    assert len(held) == 10
    _assert_partition(kept, held, 50)
    sub = subset_indices(50, 20, generator=generator(0, "subset"))
    assert len(sub) == 20 and len(sub.unique()) == 20 and sub.max() < 50
    assert torch.equal(subset_indices(50, None, generator=torch.Generator()), torch.arange(50))
    assert torch.equal(subset_indices(50, 80, generator=torch.Generator()), torch.arange(50))


def _unique_rows(*splits: Split) -> int:
    return len(torch.cat([s.x.flatten(1) for s in splits]).unique(dim=0))


def test_val_split_disjoint_and_covering(mnist1d_root: Path) -> None:
    b = load_dataset("mnist1d", root=mnist1d_root, val_fraction=0.25, seed=0)
    assert (len(b.train), len(b.val)) == (3000, 1000)
    assert _unique_rows(b.train, b.val) == 4000  # no example in both; together the whole training set
    other = load_dataset("mnist1d", root=mnist1d_root, val_fraction=0.25, seed=1)
    assert not torch.equal(b.val.y, other.val.y)


def test_empty_val_split_works(mnist1d_root: Path) -> None:
    b = load_dataset("mnist1d", root=mnist1d_root, val_fraction=0.0)
    assert len(b.val) == 0 and b.val.x.shape == (0, 1, 40) and b.val.y.dtype == torch.int64
    assert len(b.train) == 4000
    assert list(batches(b.val, 128, shuffle=False)) == []
    assert sum(len(y) for _, y in batches(b.val, 128)) == 0


def test_train_subset(mnist1d_root: Path) -> None:
    a = load_dataset("mnist1d", root=mnist1d_root, train_subset=500, val_fraction=0.2, seed=0)
    b = load_dataset("mnist1d", root=mnist1d_root, train_subset=500, val_fraction=0.2, seed=0)
    c = load_dataset("mnist1d", root=mnist1d_root, train_subset=500, val_fraction=0.2, seed=1)
    assert (len(a.train), len(a.val), len(a.test)) == (400, 100, 1000)
    assert _unique_rows(a.train, a.val) == 500
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)
    assert not torch.equal(a.train.y, c.train.y)
    assert abs(a.train.x.mean().item()) < 1e-5  # normalised with the (subset) train statistics


def test_bad_fractions(mnist1d_root: Path) -> None:
    with pytest.raises(ValueError):
        load_dataset("mnist1d", root=mnist1d_root, val_fraction=1.0)
    with pytest.raises(ValueError):
        load_dataset("mnist1d", root=mnist1d_root, label_noise=-0.1)
