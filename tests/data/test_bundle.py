"""Split, DataBundle and the batches() iterator."""

from __future__ import annotations

import pytest
import torch

from lth_tune.data import DataBundle, Split, batches, bundle


def _split(n: int = 50) -> Split:
    return Split(torch.arange(n, dtype=torch.float32)[:, None, None].expand(n, 1, 4).clone(), torch.arange(n))


def test_each_example_once_per_epoch() -> None:
    s = _split(50)
    got = list(batches(s, 7, generator=torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in got] == [7] * 7 + [1]
    ys = torch.cat([y for _, y in got])
    assert torch.equal(ys.sort().values, torch.arange(50)) and not torch.equal(ys, torch.arange(50))
    for x, y in got:  # inputs stay aligned with labels
        assert torch.equal(x[:, 0, 0], y.float())
    assert [len(y) for _, y in batches(s, 7, drop_last=True)] == [7] * 7
    assert torch.equal(torch.cat([y for _, y in batches(s, 8, shuffle=False)]), torch.arange(50))


def test_same_seed_same_order() -> None:
    s = _split(100)

    def order(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.cat([torch.cat([y for _, y in batches(s, 16, generator=g)]) for _epoch in range(2)])

    a = order(0)
    assert torch.equal(a, order(0)) and not torch.equal(a, order(1))
    assert not torch.equal(a[:100], a[100:])  # successive epochs reshuffle


def test_augmented_batches_keep_labels_aligned() -> None:
    n = 20
    x = torch.arange(1, n + 1, dtype=torch.float32)[:, None, None, None].expand(n, 3, 32, 32).clone()
    s = Split(x, torch.arange(n))

    def run(seed: int) -> list[torch.Tensor]:
        return [xb for xb, _ in batches(s, 8, generator=torch.Generator().manual_seed(seed), augment=True)]

    for xb, yb in batches(s, 8, generator=torch.Generator().manual_seed(0), augment=True):
        assert xb.shape[1:] == (3, 32, 32)
        assert torch.equal(xb[:, :, 16, 16], yb.float()[:, None].expand(-1, 3) + 1)  # centre never padding
    assert any((xb == 0).any() for xb in run(0))  # some zero padding got in
    assert all(torch.equal(a, b) for a, b in zip(run(0), run(0)))


def test_split_subset_and_checks() -> None:
    s = _split(10)
    assert len(s) == 10
    assert s.subset(torch.tensor([3, 1])).y.tolist() == [3, 1]
    assert s.subset([0, 9]).y.tolist() == [0, 9]
    assert s.subset(s.y % 2 == 0).y.tolist() == [0, 2, 4, 6, 8]
    assert s.subset(slice(2, 4)).y.tolist() == [2, 3]
    assert len(s.subset(torch.tensor([], dtype=torch.long))) == 0
    with pytest.raises(ValueError):
        Split(torch.zeros(3, 1, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError):
        DataBundle(s, s, s, 10, (1, 4), False, torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError):
        next(batches(s, 0))


@pytest.mark.parametrize("augment", [False, True])
def test_small_splits_gathered_once_per_epoch_give_the_same_batches(monkeypatch, augment) -> None:
    """Below WHOLE_EPOCH_GATHER_BYTES the epoch is one gather and batches are slices of it; above, one gather per
    batch: the same tensors, bit for bit, and the same random stream afterwards."""
    torch.manual_seed(0)
    s = Split(torch.randn(50, 3, 8, 8), torch.randint(0, 10, (50,)))

    def epoch(limit: int):
        monkeypatch.setattr(bundle, "WHOLE_EPOCH_GATHER_BYTES", limit)
        g = torch.Generator().manual_seed(3)
        out = list(batches(s, 16, generator=g, augment=augment))
        return out, torch.rand(1, generator=g)

    (once, after_once), (each, after_each) = epoch(2**30), epoch(0)
    assert len(once) == len(each) == 4
    for (xa, ya), (xb, yb) in zip(once, each):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(after_once, after_each)
