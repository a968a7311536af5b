"""Pruning criteria and the one-step pruning operation.

Criteria follow paper 000 (Sakamoto & Sato), Table 2, whose names come from Zhou et al. (2019):
``large_final`` keeps the weights with the largest final magnitude |θ| (= IMP, Frankle & Carbin 2019),
``small_final`` keeps the smallest, ``random`` prunes uniformly at random.
"""

from __future__ import annotations

import torch

from .masks import masked_layers, refresh

CRITERIA = ("large_final", "small_final", "random")
STRATEGIES = ("global", "layerwise")


def keep_scores(
    weight: torch.Tensor, criterion: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-weight score, higher = more worth keeping; the lowest-scoring unpruned weights are removed."""
    if criterion == "large_final":
        return weight.detach().abs()
    if criterion == "small_final":
        return -weight.detach().abs()
    if criterion == "random":
        device = generator.device if generator is not None else weight.device
        return torch.rand(weight.shape, generator=generator, device=device).to(weight.device)
    raise ValueError(f"unknown pruning criterion {criterion!r}; valid: {', '.join(CRITERIA)}")


def lowest_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` lowest entries of a 1-D tensor; among equal scores the lower index goes
    first (deterministic on CPU and CUDA; O(n) via ``kthvalue`` rather than a full sort)."""
    n = scores.numel()
    if k <= 0:
        return torch.empty(0, dtype=torch.long, device=scores.device)
    if k >= n:
        return torch.arange(n, device=scores.device)
    threshold = torch.kthvalue(scores, k).values
    below = torch.nonzero(scores < threshold).squeeze(1)
    tied = torch.nonzero(scores == threshold).squeeze(1)[: k - below.numel()]
    return torch.cat([below, tied])


def prune_step(
    model,
    fraction: float,
    *,
    criterion: str = "large_final",
    strategy: str = "global",
    generator: torch.Generator | None = None,
) -> None:
    """Prune ``round(fraction * remaining)`` of the currently unpruned weights of the masked layers.

    ``strategy="global"`` ranks all masked layers' unpruned weights together (OpenLTH
    ``sparse_global``, as in Frankle et al. 2020 for ResNet-20/VGG-16); ``"layerwise"`` removes
    ``round(fraction * remaining_l)`` in each layer separately. Pruned weights are never revived.
    ``round`` is Python's (half to even). Ties are broken deterministically: among equal scores the
    weight that comes first (layer registration order, then row-major position) is removed first.
    ``random`` draws its scores from ``generator`` (a ``torch.Generator``; global RNG when None).
    Masks must have been attached with :func:`attach_masks`.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown pruning criterion {criterion!r}; valid: {', '.join(CRITERIA)}")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown pruning strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"pruning fraction must be in [0, 1], got {fraction}")
    layers = [m for _, m in masked_layers(model)]
    if not layers:
        raise ValueError("prune_step: the model has no masks; call lth_tune.pruning.attach_masks first")

    with torch.no_grad():
        alive, scores = [], []
        for m in layers:
            alive_idx = torch.nonzero(m.weight_mask.reshape(-1)).squeeze(1)
            alive.append(alive_idx)
            scores.append(keep_scores(m.weight_orig, criterion, generator).reshape(-1)[alive_idx])

        if strategy == "layerwise":
            removals = []
            for s in scores:
                k = round(float(fraction) * s.numel())
                removals.append(lowest_k(s, k))
        else:
            device = scores[0].device
            flat = torch.cat([s.to(device) for s in scores])
            k = round(float(fraction) * flat.numel())
            order = lowest_k(flat, k)
            sizes = torch.tensor([s.numel() for s in scores], device=device)
            offsets = torch.cumsum(sizes, 0) - sizes
            layer_of = torch.repeat_interleave(torch.arange(len(scores), device=device), sizes)[order]
            removals = [(order[layer_of == i] - offsets[i]).to(scores[i].device) for i in range(len(scores))]

        for m, alive_idx, rem in zip(layers, alive, removals):
            if rem.numel():
                # reshape copies for channels-last masks: zero in the row-major copy, then write back
                flat_mask = m.weight_mask.reshape(-1).clone()
                flat_mask[alive_idx[rem]] = 0
                m.weight_mask.copy_(flat_mask.view(m.weight_mask.shape))
    for m in layers:
        refresh(m)


def random_masks_like(masks: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Uniformly random bool masks with exactly the per-layer kept counts of ``masks`` (the ``random_prune``
    control of Frankle & Carbin 2019 / OpenLTH's ``randomly_prune`` branch: same layer-wise sparsity, random
    positions). Draws one permutation per layer, in the order of ``masks``, from ``generator`` (CPU)."""
    out = {}
    for name, m in masks.items():
        flat = m.reshape(-1) != 0
        kept = int(flat.sum())
        order = torch.randperm(flat.numel(), generator=generator)
        new = torch.zeros(flat.numel(), dtype=torch.bool)
        new[order[:kept]] = True
        out[name] = new.view(m.shape).to(m.device)
    return out
