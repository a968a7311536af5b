"""Adapters from the typed config to the mathematics: flatness and PAC-Bayes metrics of a trained ticket.

``lth_tune.flatness`` and ``lth_tune.pacbayes`` take plain arguments; these two functions are where a
:class:`~lth_tune.config.FlatnessConfig` / :class:`~lth_tune.config.BoundConfig` becomes those arguments,
so every setting a study file can write reaches the measurement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from lth_tune.config import BoundConfig, FlatnessConfig
from lth_tune.data import DataBundle
from lth_tune.flatness import measure_flatness
from lth_tune.pacbayes import certify_ticket

__all__ = ["flatness_metrics", "ticket_bound_metrics"]


def flatness_metrics(model: nn.Module, data: DataBundle, cfg: FlatnessConfig, *, seed: int,
                     artefacts_dir: str | Path | None = None) -> dict[str, Any]:
    """Flatness of the ticket on the training split with cross-entropy (paper 000 §3.2, §4.2):
    :func:`lth_tune.flatness.measure_flatness` with every field of ``cfg``."""
    return measure_flatness(
        model, nn.CrossEntropyLoss(), data.train, trace=cfg.trace, top_eig=cfg.top_eig, landscape=cfg.landscape,
        sharpness_sigma=cfg.sharpness_sigma, method=cfg.method, n_batches=cfg.n_batches,
        batch_size=cfg.batch_size, trace_iters=cfg.trace_iters, eig_iters=cfg.eig_iters, tol=cfg.tol,
        top_n=cfg.top_n, sharpness_samples=cfg.sharpness_samples, landscape_alphas=cfg.landscape_alphas(),
        artefacts_dir=artefacts_dir, seed=seed,
    )


def ticket_bound_metrics(model: nn.Module, theta_init: dict[str, torch.Tensor], data: DataBundle,
                         cfg: BoundConfig, *, seed: int) -> dict[str, float]:
    """Spike-and-slab and Gaussian certificates of the ticket (paper 000 §4.3) on the bound set S = the
    training split: :func:`lth_tune.pacbayes.certify_ticket` with every field of ``cfg``. BatchNorm statistics
    of the sampled networks come from the validation split (disjoint from S), as do the input statistics
    (``ExperimentConfig.normalization_split``)."""
    return certify_ticket(
        model, theta_init, data.train.x, data.train.y, prior_sigmas=cfg.sigma_grid(), delta=cfg.delta,
        delta_prime=cfg.delta_prime, mc_samples=cfg.mc_samples, steps=cfg.steps, batch_size=cfg.batch_size,
        lr=cfg.lr, seed=seed, test=(data.test.x, data.test.y), bn_data=data.val.x, mc_mode=cfg.mc_mode,
        mc_passes=cfg.mc_passes,
    )
