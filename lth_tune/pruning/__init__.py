"""Masks (torch.nn.utils.prune reparametrisation), pruning criteria (paper 000, Table 2) and rewinding.

See docs/architecture.md. Typical IMP level (Frankle & Carbin 2019; Frankle et al. 2020)::

    attach_masks(model, ignore=["fc"])
    init = snapshot(model)                      # or after k iterations (rewinding)
    for level in range(levels):
        train(model)
        prune_step(model, 0.2, criterion="large_final", strategy="global")
        rewind(model, init)
"""

from .criteria import CRITERIA, STRATEGIES, keep_scores, prune_step, random_masks_like
from .masks import (
    TrainableParameter,
    apply_mask_to_weights,
    attach_masks,
    copy_model,
    density,
    effective_weights,
    is_masked,
    load_mask_state,
    mask_state,
    masked_in_place,
    masked_layers,
    masks,
    parameter_attribute,
    preserved_weight_attributes,
    refresh_all,
    trainable_parameters,
)
from .rewind import rewind, set_weights, snapshot

__all__ = [
    "CRITERIA",
    "STRATEGIES",
    "TrainableParameter",
    "apply_mask_to_weights",
    "attach_masks",
    "copy_model",
    "density",
    "effective_weights",
    "is_masked",
    "keep_scores",
    "load_mask_state",
    "mask_state",
    "masked_in_place",
    "masked_layers",
    "masks",
    "parameter_attribute",
    "preserved_weight_attributes",
    "prune_step",
    "random_masks_like",
    "refresh_all",
    "rewind",
    "set_weights",
    "snapshot",
    "trainable_parameters",
]
