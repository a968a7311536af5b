"""Weight rewinding that keeps the masks (lottery-ticket resetting, Frankle & Carbin 2019; rewinding to
iteration k, Frankle et al. 2020 "Linear mode connectivity and the LTH"). The caller decides *when* to
take the :func:`snapshot` (at initialisation, or after k iterations)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .masks import masked_layers, refresh


def _resolve(key: str, targets: Mapping[str, torch.Tensor]) -> str | None:
    if key in targets:
        return key
    if key.endswith("weight") and key + "_orig" in targets:  # unmasked snapshot -> masked model
        return key + "_orig"
    if key.endswith("weight_orig") and key[: -len("_orig")] in targets:  # masked snapshot -> plain model
        return key[: -len("_orig")]
    return None


def set_weights(model: nn.Module, weights: Mapping[str, torch.Tensor]) -> None:
    """Copy ``weights`` (state-dict style names) into the model's parameters/buffers, keeping masks.

    ``"x.weight"`` and ``"x.weight_orig"`` are interchangeable: for a masked layer the value goes to
    ``weight_orig``. Any other parameter or buffer (biases, BatchNorm statistics) may be given too.
    ``*weight_mask`` entries are skipped (masks are only changed by prune_step / load_mask_state).
    Unknown names or shape mismatches raise ValueError; values are converted to the target's device and
    dtype. Pruned positions of ``weight_orig`` receive the given values, the effective weights stay 0.
    """
    targets = dict(model.named_parameters())
    targets.update(dict(model.named_buffers()))
    resolved, unknown = {}, []
    for key, value in weights.items():
        if key.endswith("weight_mask"):
            continue
        name = _resolve(key, targets)
        if name is None:
            unknown.append(key)
            continue
        if tuple(targets[name].shape) != tuple(value.shape):
            raise ValueError(
                f"set_weights: {key!r} has shape {tuple(value.shape)}, "
                f"model expects {tuple(targets[name].shape)}"
            )
        resolved[name] = value
    if unknown:
        raise ValueError(f"set_weights: unknown parameter/buffer name(s) {sorted(unknown)}")
    with torch.no_grad():
        for name, value in resolved.items():
            targets[name].copy_(value)
    for _, m in masked_layers(model):
        refresh(m)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Deep copy of everything needed to rewind: all parameters and buffers (``weight_orig`` names for
    masked layers, BatchNorm running statistics), masks excluded."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith("weight_mask")}


def rewind(model: nn.Module, snap: Mapping[str, torch.Tensor]) -> None:
    """Restore the weights and buffers of ``snap`` (from :func:`snapshot`, taken before or after
    ``attach_masks``) and keep the current masks: the IMP reset step."""
    set_weights(model, snap)
