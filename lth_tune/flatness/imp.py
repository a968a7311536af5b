"""Adapter for ``lth_tune.imp``: flatness metrics of the current ticket from a ``FlatnessConfig``."""

from __future__ import annotations

from typing import Any

from torch import nn

from .measure import measure_flatness

__all__ = ["flatness_metrics"]

_FIELDS = ("trace", "top_eig", "landscape", "sharpness_sigma", "n_batches", "batch_size", "trace_iters",
           "eig_iters", "tol", "top_n", "sharpness_samples", "landscape_alphas", "artefacts_dir", "seed")


def flatness_metrics(model: nn.Module, data: Any, cfg: Any, criterion=None, **overrides) -> dict[str, Any]:
    """Measure on the training split (``data.train`` if ``data`` is a ``DataBundle``) with cross-entropy.

    Reads the ``FlatnessConfig``-like fields present on ``cfg`` (``trace``, ``top_eig``, ``landscape``,
    ``sharpness_sigma``, ``n_batches``, ``batch_size``, ``trace_iters``, ``method``, ...); ``overrides``
    win (e.g. ``artefacts_dir=...``, ``seed=...``).
    """
    split = getattr(data, "train", data)
    kwargs = {f: getattr(cfg, f) for f in _FIELDS if getattr(cfg, f, None) is not None}
    method = getattr(cfg, "method", "fast")
    kwargs["method"] = method
    kwargs.update(overrides)
    return measure_flatness(model, criterion or nn.CrossEntropyLoss(), split, **kwargs)
