"""Per-example Monte Carlo for the Gibbs risk of an MLP posterior: a fresh network for every example.

The classic estimator (Dziugaite & Roy 2017; paper 004 App. A.3) draws m networks w_1..w_m ~ Q and
evaluates each on all of S: R̂_m = mean_j R̂_S(w_j) and, w.p. ≥ 1 − δ′, R̂_S(Q) ≤ kl⁻¹(R̂_m ‖ log(2/δ′)/m).
Its slack shrinks with m only, and each network costs a pass over S.

Here every (pass r, example i) gets its own network w_{r,i} ~ Q, drawn independently. Given S and Q the
errors X_{r,i} = 1[w_{r,i} errs on z_i] are independent Bernoulli variables with means q_i = P_{w~Q}(w errs on
z_i), whose average over i is exactly R̂_S(Q). The Chernoff bound P(X̄ ≤ p̄ − t) ≤ exp(−N kl(p̄ − t ‖ p̄))
holds for independent, not identically distributed [0, 1] variables with mean p̄ (Hoeffding 1963, §2: the
moment generating function is largest in the i.i.d. case, by concavity of log), so the same certificate
holds with m := N = passes · |S|: ``certify(emp, m=passes * n, ...)``, everything else unchanged.

For an MLP a fresh weight matrix per example costs no more than a forward pass: given a layer's input h,

* Gaussian weights N(μ, σ²) (ticket posteriors, both formulations): the pre-activations are exactly
  N(μ h + b, σ² h² + σ_b²), independent across units — the local reparameterisation of Kingma, Salimans &
  Welling (2015);
* spike-and-slab weights b · N(W, σ²), b ~ Bernoulli(λ) (PBP): the mask is drawn per example and per weight,
  then the slab given the mask is integrated the same way: N((b ⊙ W) h + β, σ² (b h²)).

Only networks of Linear layers with ReLU between them (``lth_tune.models.MLP``: ``mlp``, ``lenet_300_100``)
qualify; for other architectures a per-example network is a full forward pass per example and the classic
estimator is used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lth_tune.models import MLP

__all__ = ["mlp_linears", "per_example_gaussian_errors", "per_example_spike_and_slab_errors"]


def mlp_linears(model: nn.Module) -> list[tuple[str, nn.Linear]] | None:
    """The ``(name, Linear)`` layers of an :class:`~lth_tune.models.MLP` in forward order (ReLU between
    them, none after the last), or None for any other architecture."""
    if not isinstance(model, MLP):
        return None
    return [(f"fc_layers.{i}", m) for i, m in enumerate(model.fc_layers)] + [("fc", model.fc)]


@torch.no_grad()
def per_example_gaussian_errors(layers: Sequence[tuple[Tensor, Tensor, Tensor, Tensor]], x: Tensor, y: Tensor,
                                passes: int, generator: torch.Generator, chunk: int = 8192) -> int:
    """Errors of ``passes × len(y)`` networks, one per (pass, example), each weight N(mean, sd²) independently.

    ``layers``: per Linear layer ``(weight mean, weight sd, bias mean, bias sd)`` (sd 0 for a deterministic
    entry, e.g. a pruned weight of the spike-and-slab posterior, whose mean is 0 as well)."""
    x = x.flatten(1)
    moments = [(w, s.pow(2), b, sb.pow(2)) for w, s, b, sb in layers]
    wrong = 0
    for _ in range(passes):
        for start in range(0, x.shape[0], chunk):
            h = x[start:start + chunk]
            for i, (w, vw, b, vb) in enumerate(moments):
                mean = torch.addmm(b, h, w.t())
                var = torch.addmm(vb, h * h, vw.t()).clamp_min(0)
                z = mean + var.sqrt() * torch.randn(mean.shape, generator=generator, device=mean.device,
                                                    dtype=mean.dtype)
                h = torch.relu(z) if i < len(moments) - 1 else z
            wrong += int((h.argmax(1) != y[start:start + chunk]).sum())
    return wrong


@torch.no_grad()
def per_example_spike_and_slab_errors(layers: Sequence[tuple[Tensor, Tensor, Tensor]], sigma: float, x: Tensor,
                                      y: Tensor, passes: int, generator: torch.Generator,
                                      max_elements: int = 2**23) -> int:
    """Errors of ``passes × len(y)`` networks, one per (pass, example), each prunable weight
    b · N(W, σ²) with b ~ Bernoulli(λ) independently (paper 004 eq. (5)).

    ``layers``: per Linear layer ``(W, λ (float64), bias)``. The mask is drawn as ``u < λ`` with u uniform in
    float64, as :meth:`~lth_tune.pacbayes.StochasticNet.sample_weights` does; examples are processed in chunks
    of at most ``max_elements`` mask entries."""
    x = x.flatten(1)
    widest = max(w.numel() for w, _, _ in layers)
    chunk = max(1, max_elements // widest)
    s2 = float(sigma) ** 2
    wrong = 0
    for _ in range(passes):
        for start in range(0, x.shape[0], chunk):
            h = x[start:start + chunk]
            for i, (w, lam, b) in enumerate(layers):
                u = torch.rand((h.shape[0],) + tuple(lam.shape), generator=generator, device=lam.device,
                               dtype=lam.dtype)
                keep = (u < lam).to(w.dtype)
                z = torch.einsum("boi,bi->bo", keep * w, h) + b
                if s2 > 0:
                    var = s2 * torch.einsum("boi,bi->bo", keep, h * h)
                    z = z + var.sqrt() * torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
                h = torch.relu(z) if i < len(layers) - 1 else z
            wrong += int((h.argmax(1) != y[start:start + chunk]).sum())
    return wrong


def passes_for(n: int, target: int = 100_000) -> int:
    """Passes that give at least ``target`` per-example draws (at least one)."""
    return max(1, math.ceil(target / max(n, 1)))
