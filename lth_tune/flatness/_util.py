"""Shared helpers of the flatness module: the perturbable parameter space, batches, modes, RNG."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from lth_tune.pruning import trainable_parameters

Batch = tuple[Tensor, Tensor]


class PerturbableParams(NamedTuple):
    """The "unpruned weights" space of a model (paper 000 §4.1, Measure 1).

    ``params[i]`` is a trainable parameter (``weight_orig`` for layers pruned with
    ``torch.nn.utils.prune``), ``masks[i]`` a 0/1 tensor of the same shape, dtype and device
    (``weight_mask`` or ones).  The order is that of ``model.parameters()`` restricted to
    ``requires_grad``, i.e. the order PyHessian uses.
    """

    names: list[str]
    params: list[nn.Parameter]
    masks: list[Tensor]

    def numel(self) -> int:
        return sum(p.numel() for p in self.params)

    def n_unpruned(self) -> int:
        return int(sum(float(m.sum()) for m in self.masks))


def parameters_to_perturb(model: nn.Module) -> PerturbableParams:
    """Trainable parameters of ``model`` and the pruning mask of each (ones where a parameter is never pruned),
    from :func:`lth_tune.pruning.trainable_parameters`."""
    names, params, masks = [], [], []
    for t in trainable_parameters(model):
        if t.mask is None:
            mask = torch.ones_like(t.param, memory_format=torch.contiguous_format)
        else:
            mask = t.mask.detach().to(device=t.param.device, dtype=t.param.dtype)
        names.append(t.name)
        params.append(t.param)
        masks.append(mask)
    return PerturbableParams(names, params, masks)


def as_batches(data: Any, *, batch_size: int | None = None, n_batches: int | None = None,
               device: torch.device | str | None = None) -> list[Batch]:
    """Normalise ``data`` to a list of ``(x, y)`` batches on ``device``.

    ``data`` may be one batch ``(x, y)``, an iterable of batches (list, DataLoader, generator) or an
    object with tensor attributes ``.x`` and ``.y`` (``lth_tune.data.Split``).  A single batch or a
    split is cut into batches of ``batch_size`` (if given); at most ``n_batches`` batches are kept.
    """
    if hasattr(data, "x") and hasattr(data, "y") and isinstance(data.x, Tensor):
        data = (data.x, data.y)
    if (isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Tensor)
            and isinstance(data[1], Tensor)):
        x, y = data
        if batch_size is not None and batch_size < len(x):
            batches: Iterable[Batch] = zip(x.split(batch_size), y.split(batch_size))
        else:
            batches = [(x, y)]
    else:
        batches = data
    out: list[Batch] = []
    for b in batches:
        if n_batches is not None and len(out) >= n_batches:
            break
        x, y = b[0], b[1]
        if device is not None:
            x, y = x.to(device), y.to(device)
        out.append((x, y))
    if not out:
        raise ValueError("no data: expected (x, y), an iterable of (x, y) batches or a Split")
    return out


def clear_grads(model: nn.Module) -> None:
    """Set ``.grad = None`` on every parameter (also breaks create_graph reference cycles)."""
    for p in model.parameters():
        p.grad = None


@contextlib.contextmanager
def cuda_device(device: torch.device) -> Iterator[None]:
    """Make ``device`` the current CUDA device (PyHessian uses ``.cuda()`` / ``'cuda'``)."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            yield
    else:
        yield


def dataset_loss(model: nn.Module, criterion, batches: Sequence[Batch]) -> float:
    """Mean loss over all examples of ``batches`` (criterion is a per-batch mean, weighted by size)."""
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in batches:
            total += float(criterion(model(x), y)) * len(x)
            n += len(x)
    return total / n


def flatten(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vec: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    out, i = [], 0
    for t in like:
        n = t.numel()
        out.append(vec[i:i + n].view_as(t))
        i += n
    return out


def group_dot(xs: Sequence[Tensor], ys: Sequence[Tensor]) -> Tensor:
    return sum((x * y).sum() for x, y in zip(xs, ys))
