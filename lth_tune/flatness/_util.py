"""Shared helpers of the flatness module: the perturbable parameter space, batches, modes, RNG."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

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
    """Trainable parameters of ``model`` and the pruning mask of each (ones where unpruned/unmasked).

    A parameter ``<name>_orig`` of a module that also has a buffer ``<name>_mask`` is the
    ``torch.nn.utils.prune`` reparametrisation ``<name> = <name>_orig * <name>_mask``; its mask is
    that buffer.  Every other trainable parameter gets a mask of ones.
    """
    names, params, masks = [], [], []
    modules = dict(model.named_modules())
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mod_name, _, leaf = name.rpartition(".")
        module = modules[mod_name]
        mask = None
        if leaf.endswith("_orig"):
            mask = module._buffers.get(leaf[: -len("_orig")] + "_mask")
        if mask is None:
            mask = torch.ones_like(p, memory_format=torch.contiguous_format)
        else:
            mask = mask.detach().to(device=p.device, dtype=p.dtype)
        names.append(name)
        params.append(p)
        masks.append(mask)
    return PerturbableParams(names, params, masks)


def refresh_pruned_weights(model: nn.Module) -> None:
    """Recompute ``module.<name> = <name>_orig * <name>_mask`` for every pruned module.

    After a ``torch.func`` transform / ``functional_call`` the pruning pre-hook leaves a transformed
    (or other-dtype) tensor in ``module.weight``; this restores the state a normal forward leaves.
    """
    from torch.nn.utils import prune

    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                setattr(module, hook._tensor_name, hook.apply_mask(module))


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


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


@contextlib.contextmanager
def eval_mode(model: nn.Module, training: bool = False) -> Iterator[nn.Module]:
    """Put every submodule in eval (or train) mode; restore each module's own flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield model
    finally:
        for m, f in flags:
            m.training = f


def clear_grads(model: nn.Module) -> None:
    """Set ``.grad = None`` on every parameter (also breaks create_graph reference cycles)."""
    for p in model.parameters():
        p.grad = None


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Run with the global torch RNG seeded by ``seed`` without disturbing the caller's RNG stream.

    ``seed=None`` uses (and advances) the global RNG as is.
    """
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


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
