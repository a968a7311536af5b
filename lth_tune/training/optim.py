"""Optimisers whose perturbations touch only unpruned weights (paper 000 §3.2).

Every stepper wraps ``torch.optim.SGD`` (momentum, weight decay) and differs in *where* the gradient
is taken:

* ``SGD``  — at θ.
* ``SAM``  — at θ + e, e = ρ·g/‖g‖ (Foret et al. 2021, eq. 2); adaptive SAM scales by |θ|
  (Kwon et al. 2021). BatchNorm running statistics are updated only by the first pass.
* ``NVRM`` — at θ + ε, ε ~ N(0, b²) drawn afresh every step (Xie et al. 2021, "Artificial neural
  variability"); the noise is removed before the update, so weights are never left noisy for
  evaluation, pruning, checkpoints or Hessians.

Masks (:func:`lth_tune.pruning.trainable_parameters`) restrict e and ε to unpruned weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lth_tune.pruning import trainable_parameters

Closure = Callable[[], torch.Tensor]
OPTIMIZERS = ("sgd", "sam", "nvrm")


class Stepper:
    """One optimisation step: ``loss = stepper.step(closure)``, closure = forward pass + loss (no backward)."""

    def __init__(self, model: nn.Module, *, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.model = model
        self.params = [(t.name, t.param, t.mask) for t in trainable_parameters(model)]
        self.optimizer = torch.optim.SGD(
            [p for _, p, _ in self.params], lr=lr, momentum=momentum, weight_decay=weight_decay
        )

    def step(self, closure: Closure) -> torch.Tensor:
        raise NotImplementedError

    def _gradient_at(self, closure: Closure) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = closure()
        loss.backward()
        return loss.detach()

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


class SGD(Stepper):
    def step(self, closure: Closure) -> torch.Tensor:
        loss = self._gradient_at(closure)
        self.optimizer.step()
        return loss


class _FrozenBatchNormStats:
    """Keep BatchNorm running statistics unchanged during SAM's second forward pass."""

    def __init__(self, model: nn.Module):
        self.bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def __enter__(self):
        self.saved = [
            {k: b.clone() for k, b in m.named_buffers(recurse=False) if b is not None} for m in self.bns
        ]

    def __exit__(self, *exc):
        with torch.no_grad():
            for m, saved in zip(self.bns, self.saved):
                for k, b in saved.items():
                    getattr(m, k).copy_(b)


class SAM(Stepper):
    """Sharpness-aware minimisation on unpruned weights: g ← ∇L(θ + ρ·g/‖g‖) (Foret et al. 2021)."""

    def __init__(self, model: nn.Module, *, rho: float, adaptive: bool = False, **kw):
        super().__init__(model, **kw)
        self.rho, self.adaptive = rho, adaptive

    def step(self, closure: Closure) -> torch.Tensor:
        loss = self._gradient_at(closure)
        with torch.no_grad():
            scaled = []
            for _, p, mask in self.params:
                g = torch.zeros_like(p) if p.grad is None else p.grad
                if self.adaptive:
                    g = g * p.abs()
                if mask is not None:
                    g = g * mask
                scaled.append(g)
            norm = torch.sqrt(sum(g.pow(2).sum() for g in scaled))
            eps = []
            for (_, p, _), g in zip(self.params, scaled):
                e = g * (self.rho / (norm + 1e-12))
                if self.adaptive:
                    e = e * p.abs()
                p.add_(e)
                eps.append(e)
        with _FrozenBatchNormStats(self.model):
            self._gradient_at(closure)
        with torch.no_grad():
            for (_, p, _), e in zip(self.params, eps):
                p.sub_(e)
        self.optimizer.step()
        return loss


class NVRM(Stepper):
    """Neural variable risk minimisation: gradient at θ + ε, ε ~ N(0, b²) on unpruned weights (Xie et al. 2021)."""

    def __init__(self, model: nn.Module, *, b: float, generator: torch.Generator | None = None, **kw):
        super().__init__(model, **kw)
        self.b, self.generator = b, generator

    def step(self, closure: Closure) -> torch.Tensor:
        with torch.no_grad():
            noise = []
            for _, p, mask in self.params:
                device = self.generator.device if self.generator is not None else p.device
                eps = torch.randn(p.shape, generator=self.generator, device=device, dtype=p.dtype)
                eps = eps.to(p.device) * self.b
                if mask is not None:
                    eps = eps * mask
                p.add_(eps)
                noise.append(eps)
        try:
            loss = self._gradient_at(closure)
        finally:
            with torch.no_grad():
                for (_, p, _), eps in zip(self.params, noise):
                    p.sub_(eps)
        self.optimizer.step()
        return loss


def make_stepper(
    name: str,
    model: nn.Module,
    *,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    rho: float = 0.05,
    adaptive: bool = False,
    b: float = 0.01,
    generator: torch.Generator | None = None,
) -> Stepper:
    """``sgd`` | ``sam`` | ``nvrm`` (:data:`OPTIMIZERS`) on the model's trainable parameters."""
    kw = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
    if name == "sgd":
        return SGD(model, **kw)
    if name == "sam":
        return SAM(model, rho=rho, adaptive=adaptive, **kw)
    if name == "nvrm":
        return NVRM(model, b=b, generator=generator, **kw)
    raise ValueError(f"unknown optimizer {name!r}: use one of {', '.join(OPTIMIZERS)}")
