"""Exact (dense) Hessian of the loss w.r.t. the perturbable parameters -- a reference for tiny nets only.

The Hessian is taken w.r.t. ``parameters_to_perturb(model).params`` flattened in order, i.e. w.r.t.
``weight_orig`` for pruned layers, so rows/columns of pruned weights are exactly zero (``M H M``).
Memory is ``P x P``; use it for a few thousand parameters at most.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lth_tune.models import eval_mode, model_device
from lth_tune.pruning import refresh_all

from ._util import flatten, parameters_to_perturb, unflatten

__all__ = ["exact_hessian", "exact_trace_and_top_eig", "flat_loss_function"]


def flat_loss_function(model: nn.Module, criterion, x: Tensor, y: Tensor, *,
                       dtype: torch.dtype | None = None):
    """``(f, theta0)`` with ``f(theta) = criterion(model_theta(x), y)`` over the flattened perturbable params.

    With ``dtype`` every floating parameter/buffer (and ``x``, float ``y``) is cast for the call through
    ``torch.func.functional_call`` -- the module itself is not modified (no deepcopy needed, which
    fails on pruned modules after a forward).
    """
    space = parameters_to_perturb(model)
    cast = (lambda t: t.to(dtype) if dtype is not None and t.is_floating_point() else t)
    theta0 = cast(flatten([p.detach() for p in space.params]))
    like = [p.detach() for p in space.params]
    perturbable = set(space.names)
    consts = {n: cast(t.detach()) for n, t in model.named_parameters() if n not in perturbable}
    consts.update({n: cast(b) for n, b in model.named_buffers()})
    x, y = cast(x), cast(y)

    def f(theta: Tensor) -> Tensor:
        tensors = dict(consts)
        tensors.update(zip(space.names, unflatten(theta, like)))
        return criterion(functional_call(model, tensors, (x,)), y)

    return f, theta0


def exact_hessian(model: nn.Module, criterion, x: Tensor, y: Tensor, *,
                  dtype: torch.dtype | None = torch.float64) -> Tensor:
    """Dense Hessian ``(P, P)`` of ``criterion(model(x), y)`` w.r.t. the flattened perturbable parameters.

    Computed in eval mode (mode restored) in ``dtype`` (float64 by default; ``None`` keeps the model's
    dtype) with ``torch.func.hessian`` (forward-over-reverse), falling back to
    ``torch.autograd.functional.hessian`` if an op lacks forward-mode AD.  ``.grad`` is not touched.
    """
    dev = model_device(model)
    with eval_mode(model):
        f, theta0 = flat_loss_function(model, criterion, x.to(dev), y.to(dev), dtype=dtype)
        try:
            try:
                with warnings.catch_warnings():  # torch-internal jit deprecation from forward-mode AD
                    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated.*")
                    H = torch.func.hessian(f)(theta0)
            except (RuntimeError, NotImplementedError):
                H = torch.autograd.functional.hessian(f, theta0)
        finally:
            refresh_all(model)
    return H.detach()


def exact_trace_and_top_eig(model: nn.Module, criterion, x: Tensor, y: Tensor, *, top_n: int = 1,
                            dtype: torch.dtype | None = torch.float64):
    """``(trace, top_eigenvalues, top_eigenvectors)`` from the dense Hessian.

    Eigenvalues are the ``top_n`` largest (algebraic), descending; eigenvectors are lists of tensors
    shaped like the perturbable parameters (unit norm, in the model's dtype).
    """
    H = exact_hessian(model, criterion, x, y, dtype=dtype)
    H = 0.5 * (H + H.T)
    evals, evecs = torch.linalg.eigh(H)
    space = parameters_to_perturb(model)
    like = [p.detach() for p in space.params]
    top = [float(e) for e in evals.flip(0)[:top_n]]
    vecs = [[t.to(p.dtype).clone() for t, p in zip(unflatten(evecs[:, -1 - k].contiguous(), like), like)]
            for k in range(top_n)]
    return float(torch.trace(H)), top, vecs
