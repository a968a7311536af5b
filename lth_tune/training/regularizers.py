"""Regularisers restricted to unpruned weights (paper 000 eq. (1)).

    l2_init:  λ ‖m ⊙ (θ − θ_init)‖²₂        l2_norm:  λ ‖m ⊙ θ‖²₂

θ ranges over every trainable parameter; for a layer pruned through ``torch.nn.utils.prune`` the
parameter is ``weight_orig`` and m is its ``weight_mask`` (biases and BatchNorm are never pruned: m = 1).
"""

from __future__ import annotations

import torch
from torch import nn


def masked_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter, torch.Tensor | None]]:
    """(name, parameter, mask or None) for every trainable parameter; names as in ``named_parameters``."""
    out = []
    modules = dict(model.named_modules())
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mask = None
        if name.endswith("_orig"):
            mod_name, _, attr = name.rpartition(".")
            mask = getattr(modules[mod_name], attr.removesuffix("_orig") + "_mask", None)
        out.append((name, p, mask))
    return out


def l2_init(model: nn.Module, theta_init: dict[str, torch.Tensor]) -> torch.Tensor:
    """‖m ⊙ (θ − θ_init)‖²₂ (paper 000 eq. (1), left). ``theta_init`` is keyed by parameter name."""
    total = None
    for name, p, mask in masked_parameters(model):
        d = p - theta_init[name]
        if mask is not None:
            d = d * mask
        term = d.pow(2).sum()
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


def l2_norm(model: nn.Module) -> torch.Tensor:
    """‖m ⊙ θ‖²₂ (paper 000 eq. (1), right)."""
    total = None
    for _, p, mask in masked_parameters(model):
        w = p if mask is None else p * mask
        term = w.pow(2).sum()
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


class Regularizer:
    """λ·R(θ) for R ∈ {none, l2_init, l2_norm}; θ_init is captured once, at the network's initialisation."""

    def __init__(self, kind: str, lam: float, theta_init: dict[str, torch.Tensor] | None = None):
        if kind not in ("none", "l2_init", "l2_norm"):
            raise ValueError(f"unknown regularizer {kind!r}")
        if kind == "l2_init" and theta_init is None:
            raise ValueError("l2_init needs theta_init")
        self.kind, self.lam, self.theta_init = kind, float(lam), theta_init

    @property
    def active(self) -> bool:
        return self.kind != "none" and self.lam > 0

    def __call__(self, model: nn.Module) -> torch.Tensor | float:
        if not self.active:
            return 0.0
        if self.kind == "l2_init":
            return self.lam * l2_init(model, self.theta_init)
        return self.lam * l2_norm(model)
