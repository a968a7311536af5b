"""Label noise (paper 000 §3.1): exact count, always a different class, seeded, test set clean."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lth_tune.data import flip_labels, load_dataset
from lth_tune.seeding import generator


@pytest.mark.parametrize("fraction", [0.0, 0.013, 0.2, 0.5, 1.0])
def test_flip_exact_count_and_different_class(fraction: float) -> None:
    y = torch.arange(1001) % 7
    noisy, flipped = flip_labels(y, fraction, 7, generator=generator(0, "noise"))
    assert int(flipped.sum()) == round(fraction * 1001)
    assert torch.equal(flipped, noisy != y)  # every flipped label changed, no other did
    assert noisy.min() >= 0 and noisy.max() < 7
    assert torch.equal(y, torch.arange(1001) % 7)  # input untouched


def test_flip_targets_are_uniform_over_other_classes() -> None:
    y = torch.zeros(18000, dtype=torch.long)
    noisy, _ = flip_labels(y, 1.0, 10, generator=generator(1, "noise"))
    counts = torch.bincount(noisy, minlength=10)
    assert counts[0] == 0
    assert ((counts[1:].float() - 2000).abs() < 200).all()  # 9 classes, 2000 expected each (sd ~ 42)


def test_flip_is_seeded() -> None:
    y = torch.arange(500) % 10
    a = flip_labels(y, 0.3, 10, generator=generator(0, "noise"))
    b = flip_labels(y, 0.3, 10, generator=generator(0, "noise"))
    c = flip_labels(y, 0.3, 10, generator=generator(1, "noise"))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_flip_rejects_bad_fraction() -> None:
    with pytest.raises(ValueError):
        flip_labels(torch.zeros(4, dtype=torch.long), 1.5, 10, generator=torch.Generator())


def test_load_dataset_noise_on_whole_training_set(mnist1d_root: Path) -> None:
    n = 4000
    clean = load_dataset("mnist1d", root=mnist1d_root, seed=2, val_fraction=0.1)
    noisy = load_dataset("mnist1d", root=mnist1d_root, seed=2, val_fraction=0.1, label_noise=0.25)
    # the validation hold-out does not move with the noise: same examples, same order
    assert torch.equal(clean.train.x, noisy.train.x) and torch.equal(clean.val.x, noisy.val.x)
    assert torch.equal(noisy.noisy, noisy.train.y != clean.train.y)
    flipped_in_val = int((noisy.val.y != clean.val.y).sum())
    assert int(noisy.noisy.sum()) + flipped_in_val == round(0.25 * n)  # flips drawn on S before hold-out
    assert 0 < flipped_in_val < int(noisy.noisy.sum())
    assert torch.equal(noisy.test.y, clean.test.y) and torch.equal(noisy.test.x, clean.test.x)


def test_load_dataset_noise_seeding(mnist1d_root: Path) -> None:
    a = load_dataset("mnist1d", root=mnist1d_root, seed=0, val_fraction=0.0, label_noise=0.1)
    b = load_dataset("mnist1d", root=mnist1d_root, seed=0, val_fraction=0.0, label_noise=0.1)
    c = load_dataset("mnist1d", root=mnist1d_root, seed=1, val_fraction=0.0, label_noise=0.1)
    assert int(a.noisy.sum()) == 400
    assert torch.equal(a.noisy, b.noisy) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.noisy, c.noisy)
