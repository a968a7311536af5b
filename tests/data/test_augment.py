"""Batched random crop + horizontal flip."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lth_tune.data import random_crop_flip, random_flip


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reference(x: torch.Tensor, padding: int, seed: int) -> torch.Tensor:
    """Slow per-example crop + flip, consuming the generator in the documented order."""
    g = _gen(seed)
    n, _, h, w = x.shape
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=g)
    mirror = torch.rand(n, generator=g) < 0.5
    out = []
    for i in range(n):
        img = F.pad(x[i], (padding,) * 4)[:, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out.append(img.flip(-1) if mirror[i] else img)
    return torch.stack(out)


def test_matches_per_example_reference() -> None:
    x = torch.randn(64, 3, 12, 10)
    out = random_crop_flip(x, padding=4, generator=_gen(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, _reference(x, 4, 0))


def test_crop_is_a_shifted_window_of_the_padded_image() -> None:
    x = torch.randn(32, 2, 8, 8)
    out = random_crop_flip(x, padding=3, flip=False, generator=_gen(1))
    padded = F.pad(x, (3, 3, 3, 3))
    offsets = set()
    for i in range(len(x)):
        hits = [
            (a, b)
            for a in range(7)
            for b in range(7)
            if torch.equal(out[i], padded[i, :, a : a + 8, b : b + 8])
        ]
        assert len(hits) == 1
        offsets.add(hits[0])
    assert len(offsets) > 10  # offsets really vary


def test_flip_exactly_mirrors() -> None:
    x = torch.randn(40, 3, 5, 6)
    out = random_crop_flip(x, padding=0, generator=_gen(2))
    flipped = torch.tensor([torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)])
    same = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    assert (flipped ^ same).all() and 0 < int(flipped.sum()) < 40
    assert torch.equal(out[:, :, :, 0], torch.where(flipped[:, None, None], x[:, :, :, -1], x[:, :, :, 0]))

    out2 = random_flip(x, generator=_gen(3))
    expect = torch.rand(40, generator=_gen(3)) < 0.5
    for o, xi, m in zip(out2, x, expect):
        assert torch.equal(o, xi.flip(-1) if m else xi)
    assert torch.equal(random_crop_flip(x, padding=0, flip=False, generator=_gen(2)), x)


def test_seeded_reproducibility() -> None:
    x = torch.randn(16, 3, 32, 32)
    a = random_crop_flip(x, generator=_gen(5))
    assert torch.equal(a, random_crop_flip(x, generator=_gen(5)))
    assert not torch.equal(a, random_crop_flip(x, generator=_gen(6)))
    assert random_crop_flip(x[:0], generator=_gen(5)).shape == (0, 3, 32, 32)


def test_rejects_non_images() -> None:
    with pytest.raises(ValueError):
        random_crop_flip(torch.randn(4, 1, 40))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_independent() -> None:
    x = torch.randn(16, 3, 32, 32)
    cpu = random_crop_flip(x, generator=_gen(7))
    gpu = random_crop_flip(x.cuda(), generator=_gen(7))
    assert gpu.is_cuda and torch.equal(cpu, gpu.cpu())
