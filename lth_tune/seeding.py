"""Every random choice of a run, derived from the run's one seed and the choice's purpose.

A purpose is a tuple of tags, e.g. ``("order", level)`` for the data order of an IMP level or
``("prune", level, "random_prune")`` for a control's random mask. :func:`derived_seed` hashes
``(seed, *tags)`` with SHA-256 (independent of Python's hash salt), so

* each purpose gets its own stream, and adding a new purpose never moves the others;
* a run restored from a checkpoint re-derives exactly the streams an uninterrupted run would use.

Code that needs randomness takes a :func:`generator` (explicit, preferred) or runs under
:func:`fork_rng` (for library code that draws from torch's global RNG, e.g. model initialisation,
PyHessian's probes, ``RelaxedBernoulli.rsample``), which restores the caller's RNG state afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["derived_seed", "fork_rng", "generator"]


def derived_seed(seed: int, *tags: Any) -> int:
    """A stable 63-bit seed for one purpose: SHA-256 of ``repr((seed, *tags))``."""
    digest = hashlib.sha256(repr((int(seed),) + tags).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(seed: int, *tags: Any, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with :func:`derived_seed` ``(seed, *tags)``."""
    g = torch.Generator(device=device)
    g.manual_seed(derived_seed(seed, *tags))
    return g


@contextlib.contextmanager
def fork_rng(seed: int | None, device: str | torch.device = "cpu") -> Iterator[None]:
    """Run the block with torch's global RNG (CPU, and ``device`` if it is a CUDA device) seeded with
    ``seed`` (already derived, e.g. ``derived_seed(run_seed, "init")``), then restore the caller's state.

    ``seed=None`` leaves the global RNG alone (the block uses and advances it as is).
    """
    if seed is None:
        yield
        return
    device = torch.device(device)
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield
