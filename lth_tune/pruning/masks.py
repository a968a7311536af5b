"""Pruning masks in ``torch.nn.utils.prune``'s reparametrisation.

Each masked layer has a parameter ``weight_orig``, a buffer ``weight_mask`` (float 0/1, same dtype and
device as the weight) and ``weight = weight_orig * weight_mask`` recomputed by a forward pre-hook (torch's
``prune.Identity`` method with a leaner hook, :class:`MaskHook`: the same product, the same autograd graph).
Gradients w.r.t. ``weight_orig`` are therefore zero at pruned positions, so optimisers (SGD, SAM, NVRM
perturbations) and curvature tools (PyHessian) only ever move unpruned weights. Masks are changed in
place (never by stacking ``PruningContainer``s). Training loops run inside :func:`masked_in_place`, which keeps
these semantics with pruned weights stored as zeros and masked gradients instead of the product.

Layer names are module names as returned by :func:`lth_tune.models.prunable_layers` (``"fc"``,
``"blocks.0.conv1"``, ...).
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils import prune

from lth_tune.models import prunable_layers

_SUFFIXES = (".weight_mask", ".weight_orig", ".weight")
_ORIG, _MASK = "_orig", "_mask"  # torch.nn.utils.prune's names: <name>_orig (parameter), <name>_mask (buffer)


def _layer_name(key: str) -> str:
    """``"fc.weight"`` / ``"fc.weight_mask"`` / ``"fc"`` -> ``"fc"`` (a bare ``"weight"`` -> ``""``)."""
    for suffix in _SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)]
        if key == suffix[1:]:
            return ""
    return key


class MaskHook(prune.Identity):
    """``prune.identity``'s pruning method with a leaner forward pre-hook.

    torch's hook computes ``weight_mask.to(weight_orig.dtype) * weight_orig`` (this very product, operands in
    this order: the same bits and the same autograd graph) through ``getattr``/``setattr`` on the module, i.e.
    ``nn.Module.__getattr__``/``__setattr__`` with their checks; this one reads the parameter and buffer dicts and
    stores the result in the module's ``__dict__``, which is where ``setattr`` puts a plain tensor. About 10 µs less
    per masked layer and forward on a CPU: an eighth of the masking cost of a small MLP's training step. Still a
    ``BasePruningMethod``, so ``prune.remove``, ``prune.is_pruned`` and state dicts are unchanged.
    """

    def __call__(self, module: nn.Module, inputs) -> None:
        name = self._tensor_name
        orig = module._parameters[name + _ORIG]
        module.__dict__[name] = module._buffers[name + _MASK].to(dtype=orig.dtype) * orig


@contextlib.contextmanager
def masked_in_place(model: nn.Module) -> Iterator[None]:
    """Train with pruned weights stored as zeros: ``torch.nn.utils.prune``'s semantics without its product.

    Inside the block each masked layer's ``weight`` *is* its ``weight_orig`` parameter, whose pruned entries are
    set to zero on entry, and a gradient hook multiplies every gradient accumulated into ``weight_orig`` by the
    mask. Pruned weights are therefore exactly zero and get no gradient, as with the reparametrisation, and the
    unpruned weights follow the very same arithmetic (∂L/∂weight_orig = mask ⊙ ∂L/∂weight), but a step
    launches one in-place multiply per layer (after the backward) instead of the forward's
    ``weight_mask * weight_orig`` and its backward. On the MNIST-1D MLP that product was 16 % of a
    0.56 ms CPU step (issue 13; ``bench/throughput.py``).

    On exit the reparametrisation is back (forward pre-hooks, ``weight = weight_orig * weight_mask``);
    ``weight_orig`` keeps zeros at the pruned positions, where the reparametrisation would have kept the
    values they had when they were pruned (read by nothing: every consumer multiplies by the mask). Meant
    for a training loop: inside the block masks must not change and ``refresh`` must not be called.
    """
    baked = []
    for _, m in masked_layers(model):
        keys = [k for k, h in m._forward_pre_hooks.items()
                if isinstance(h, prune.BasePruningMethod) and h._tensor_name == "weight"]
        if not keys:
            continue  # already inside an enclosing block
        orig, mask = m._parameters["weight" + _ORIG], m._buffers["weight" + _MASK]
        with torch.no_grad():
            orig.mul_(mask)
        hooks = [(k, m._forward_pre_hooks.pop(k)) for k in keys]
        handle = orig.register_post_accumulate_grad_hook(functools.partial(_mask_gradient, mask=mask))
        m.__dict__["weight"] = orig
        baked.append((m, hooks, handle))
    try:
        yield
    finally:
        for m, hooks, handle in baked:
            handle.remove()
            m._forward_pre_hooks.update(hooks)
            refresh(m)


def _mask_gradient(param: torch.Tensor, *, mask: torch.Tensor) -> None:
    """``∂L/∂weight_orig ← mask ⊙ ∂L/∂weight_orig`` in place (a post-accumulate-grad hook of :func:`masked_in_place`)."""
    param.grad.mul_(mask)


def _attach(module: nn.Module) -> None:
    """An all-ones mask on ``module.weight`` (``prune.identity`` with :class:`MaskHook`)."""
    MaskHook.apply(module, "weight")


def is_masked(module: nn.Module) -> bool:
    """Whether ``module.weight`` is reparametrised as ``weight_orig * weight_mask``."""
    return "weight_orig" in module._parameters and "weight_mask" in module._buffers


def masked_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` for every prunable layer that carries a mask, in registration order."""
    return [(n, m) for n, m in prunable_layers(model) if is_masked(m)]


class TrainableParameter(NamedTuple):
    """One trainable parameter θ_j and its pruning mask m_j (paper 000 eq. (1): the ``m ⊙ θ`` of every formula).

    ``name`` is the ``named_parameters`` name (``"fc.weight_orig"`` for a masked layer, ``"fc.bias"``);
    ``mask`` is the live 0/1 mask buffer for a masked weight and None for a parameter that is never pruned
    (biases, BatchNorm, ignored layers); ``mask_name`` is that buffer's state-dict name (or None), for
    code that substitutes it with :func:`torch.func.functional_call`.
    """

    name: str
    param: nn.Parameter
    mask: torch.Tensor | None
    mask_name: str | None


def trainable_parameters(model: nn.Module) -> list[TrainableParameter]:
    """Every parameter with ``requires_grad``, in ``named_parameters`` order, with its mask (or None).

    This is the one place that knows the reparametrisation's names: everything else (optimisers,
    regularisers, Hessians, posteriors) asks here which parameters exist and which entries are unpruned.
    """
    out = []
    modules = dict(model.named_modules())
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mod_name, _, leaf = name.rpartition(".")
        mask = mask_name = None
        if leaf.endswith(_ORIG):
            buffer = leaf.removesuffix(_ORIG) + _MASK
            mask = modules[mod_name]._buffers.get(buffer)
            if mask is not None:
                mask_name = f"{mod_name}.{buffer}" if mod_name else buffer
        out.append(TrainableParameter(name, p, mask, mask_name))
    return out


def parameter_attribute(name: str) -> tuple[str, str]:
    """``"fc.weight_orig"`` → ``("fc", "weight")``: the module and the attribute a parameter stands for
    (the effective ``weight`` of a masked layer, whose stored parameter is ``weight_orig``)."""
    mod_name, _, leaf = name.rpartition(".")
    return mod_name, leaf.removesuffix(_ORIG)


def refresh(module: nn.Module) -> None:
    """Recompute ``module.weight = weight_orig * weight_mask`` now, detached from autograd.

    The forward pre-hook recomputes it (with grad) at every forward; this keeps ``module.weight`` right
    between forwards (e.g. after a mask change) and leaves it a graph leaf so ``copy.deepcopy`` works.
    Code that needs gradients must use ``weight_orig * weight_mask`` (or the output of a forward),
    never a ``module.weight`` read outside the forward.
    """
    with torch.no_grad():
        module.weight = module.weight_orig * module.weight_mask


def refresh_all(model: nn.Module) -> None:
    """:func:`refresh` every masked layer (e.g. after ``torch.func.functional_call`` or a ``torch.func``
    transform left a substituted tensor in ``module.weight``)."""
    for _, m in masked_layers(model):
        refresh(m)


@contextlib.contextmanager
def preserved_weight_attributes(model: nn.Module) -> Iterator[None]:
    """Put back, after the block, the very ``weight`` tensors the masked layers hold now.

    ``torch.func.functional_call`` on a masked model leaves the prune hook's last (substituted) ``weight``
    on each masked module; code that samples networks that way wraps itself in this."""
    saved = [(m, m.weight) for _, m in masked_layers(model)]
    try:
        yield
    finally:
        for m, w in saved:
            m.weight = w


def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also works for masked models after a training forward (torch refuses to
    deepcopy the non-leaf ``weight`` the prune hook leaves behind). Masks are copied too."""
    for _, m in masked_layers(model):
        refresh(m)
    return copy.deepcopy(model)


def _check_names(model: nn.Module, names: Iterable[str], what: str) -> dict[str, nn.Module]:
    layers = dict(prunable_layers(model))
    unknown = sorted(set(names) - set(layers))
    if unknown:
        valid = list(layers)
        shown = ", ".join(valid[:40]) + (", ..." if len(valid) > 40 else "")
        raise ValueError(f"{what}: unknown prunable layer name(s) {unknown}; prunable layers: {shown}")
    return layers


def attach_masks(model: nn.Module, ignore: Iterable[str] | str = ()) -> None:
    """Attach an all-ones mask (``prune.identity``) to every prunable layer not listed in ``ignore``.

    ``ignore`` holds module names such as ``"fc"`` (``"fc.weight"``, OpenLTH's spelling, is accepted
    too); unknown names raise ValueError. Layers that already carry a mask are left untouched, so the
    call is idempotent.
    """
    if isinstance(ignore, str):
        ignore = (ignore,)
    ignore = {_layer_name(n) for n in ignore}
    layers = _check_names(model, ignore, "attach_masks(ignore=...)")
    for name, module in layers.items():
        if name not in ignore and not is_masked(module):
            _attach(module)
            refresh(module)


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{layer name: weight_mask}`` for the masked layers. These are the live buffers (float 0/1):
    modify them only through this package."""
    return {n: m.weight_mask for n, m in masked_layers(model)}


def density(model: nn.Module) -> float:
    """Fraction of the masked layers' weights that are unpruned (1.0 when nothing is masked)."""
    total = kept = 0
    for _, m in masked_layers(model):
        total += m.weight_mask.numel()
        kept += int(torch.count_nonzero(m.weight_mask))
    return kept / total if total else 1.0


def effective_weights(model: nn.Module, *, include_unmasked: bool = False) -> dict[str, torch.Tensor]:
    """``{layer name: weight_orig * weight_mask}`` (detached) for the masked layers; with
    ``include_unmasked`` also the plain ``weight`` of prunable layers without a mask (e.g. an ignored
    ``fc``)."""
    out = {}
    for name, m in prunable_layers(model):
        if is_masked(m):
            out[name] = (m.weight_orig * m.weight_mask).detach()
        elif include_unmasked:
            out[name] = m.weight.detach().clone()
    return out


def apply_mask_to_weights(model: nn.Module) -> None:
    """Zero ``weight_orig`` at pruned positions, so pruned weights are exactly zero in storage too
    (before saving / evaluating / measuring norms of ``weight_orig``)."""
    with torch.no_grad():
        for _, m in masked_layers(model):
            m.weight_orig.mul_(m.weight_mask)
    for _, m in masked_layers(model):
        refresh(m)


def mask_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Masks as plain CPU bool tensors ``{layer name: mask}`` for checkpoints
    (``torch.load(..., weights_only=True)`` loads them)."""
    return {n: m.weight_mask.detach().to("cpu", torch.bool).clone() for n, m in masked_layers(model)}


def load_mask_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load masks saved by :func:`mask_state` (keys may also be state-dict style ``"fc.weight_mask"``).

    Layers of ``state`` without a mask get one attached first, so this works on a freshly built model
    (after which ``model.load_state_dict`` of a masked checkpoint also works). Raises ValueError for
    unknown layers, shape mismatches, or layers of ``model`` that are masked but absent from ``state``.
    """
    state = {_layer_name(k): v for k, v in state.items()}
    layers = _check_names(model, state, "load_mask_state")
    extra = sorted(n for n, _ in masked_layers(model) if n not in state)
    if extra:
        raise ValueError(f"load_mask_state: model has masks on layers missing from the state: {extra}")
    for name, value in state.items():
        module = layers[name]
        if tuple(value.shape) != tuple(module.weight.shape):
            raise ValueError(
                f"load_mask_state: mask for {name!r} has shape {tuple(value.shape)}, "
                f"weight has {tuple(module.weight.shape)}"
            )
        if not is_masked(module):
            _attach(module)
        with torch.no_grad():
            module.weight_mask.copy_(value.to(module.weight_mask.device) != 0)
        refresh(module)
