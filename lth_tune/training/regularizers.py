"""Regularisers restricted to unpruned weights (paper 000 eq. (1)).

    l2_init:  λ ‖m ⊙ (θ − θ_init)‖²₂        l2_norm:  λ ‖m ⊙ θ‖²₂

θ ranges over every trainable parameter and m is its pruning mask (:func:`lth_tune.pruning.trainable_parameters`;
biases and BatchNorm are never pruned: m = 1).
"""

from __future__ import annotations

import torch
from torch import nn

from lth_tune.pruning import trainable_parameters

REGULARIZERS = ("none", "l2_init", "l2_norm")


def l2_init(model: nn.Module, theta_init: dict[str, torch.Tensor]) -> torch.Tensor:
    """‖m ⊙ (θ − θ_init)‖²₂ (paper 000 eq. (1), left). ``theta_init`` is keyed by parameter name."""
    total = None
    for name, p, mask, _ in trainable_parameters(model):
        d = p - theta_init[name]
        if mask is not None:
            d = d * mask
        term = d.pow(2).sum()
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


def l2_norm(model: nn.Module) -> torch.Tensor:
    """‖m ⊙ θ‖²₂ (paper 000 eq. (1), right)."""
    total = None
    for _, p, mask, _ in trainable_parameters(model):
        w = p if mask is None else p * mask
        term = w.pow(2).sum()
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


class Regularizer:
    """λ·R(θ) for R ∈ {none, l2_init, l2_norm}; θ_init is captured once, at the network's initialisation."""

    def __init__(self, kind: str, lam: float, theta_init: dict[str, torch.Tensor] | None = None):
        if kind not in REGULARIZERS:
            raise ValueError(f"unknown regularizer {kind!r}; valid: {', '.join(REGULARIZERS)}")
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
