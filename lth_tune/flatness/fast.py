"""Fast Hessian measurements: exact trace for piecewise-linear nets, Lanczos for the top eigenvalue(s).

(a) Exact trace via the Gauss-Newton diagonal
-------------------------------------------------
Write the loss as ``L(θ) = (1/N) Σ_n ℓ(f(x_n; θ), y_n)``.  Then

    H = (1/N) Σ_n J_nᵀ H_ℓ,n J_n  +  (1/N) Σ_n Σ_c (∂ℓ/∂f_c) ∂²f_c/∂θ²          (GGN + residual term)

For a network built from linear/conv layers, piecewise-linear activations (ReLU, LeakyReLU, ReLU6,
Hardtanh, PReLU), max/avg pooling, padding, dropout (eval) and BatchNorm in **eval mode** (an affine
map), the output is, for a fixed activation pattern, a sum over paths of products of weights in which
each parameter occurs at most once: ``f`` is *affine in every single parameter*, so ``∂²f/∂θ_i² = 0`` and
the diagonal of the Hessian equals the diagonal of the GGN (off-diagonal entries do differ).  Hence

    tr H = Σ_i diag(GGN)_i = (1/N) Σ_n Σ_c || a_{n,c}ᵀ J_n ||²,     H_ℓ,n = A_n A_nᵀ.

For softmax cross-entropy ``H_ℓ = diag(p) − p pᵀ = A Aᵀ`` with ``A = diag(√p) − p √pᵀ``, i.e.
``a_cᵀ J = √p_c (J_c − Σ_k p_k J_k)`` and ``diag(GGN) = Σ_c p_c (J_c − pᵀJ)²`` (a p-weighted variance of
the Jacobian rows -- non-negative, no cancellation).  MSE (``H_ℓ = 2I/D``) and BCE-with-logits
(``H_ℓ = diag(s(1−s))``) are supported too.  Two exact backends (no probes, no variance):

* ``layerwise`` (default when every parameter sits in a Linear / Conv1d / Conv2d / BatchNorm layer): one
  forward, then for each factor column ``k`` one backward pass of the cotangent ``a_k`` to the layer
  outputs.  The per-sample gradient of a Linear weight is ``g aᵀ``, so ``Σ_{n,k} (g aᵀ)² = (Σ_k g²)ᵀ a²`` is
  one matmul and nothing per-sample is materialised; Conv1d/2d use unfold (per-sample gradients of one
  factor at a time, ``chunk·P_layer`` memory), eval BatchNorm is closed form.  Cost ≈ 1 forward + C
  backward passes (+ per-sample conv weight gradients, ~C weight-gradient passes).
* ``functorch``: per-sample Jacobians ``J_n`` by ``torch.func.vmap(jacrev(...))`` over chunks of examples
  (any layer type; memory ``chunk·C·P``), contracted with the factor ``A_n``.

This is exact (up to float round-off) when: the loss is CE / MSE / BCE-with-logits averaged over the
data; layers are the ones listed above; the model is evaluated in eval mode (we force it); no parameter
is used twice in a forward pass (weight sharing / calling a module twice makes ``f`` quadratic in it).
It is **not** exact for smooth activations (tanh, GELU, SiLU, softplus, ...), LayerNorm/GroupNorm,
attention, train-mode BatchNorm.  :func:`check_piecewise_linear` raises for modules known to break the
identity and warns for unknown leaf modules; operations in ``forward`` code (``torch.tanh`` ...) cannot
be detected.  Pruned layers are handled automatically: ``∂f/∂weight_orig = mask ⊙ ∂f/∂weight``.

(b) Top eigenvalue(s) via Lanczos
---------------------------------
Lanczos with full (two-pass Gram-Schmidt) reorthogonalisation on Hessian-vector products in the
unpruned subspace.  Stops when the Ritz residual ``|β_j s_j|`` of each wanted eigenpair is below
``tol·|θ|``; the Ritz value error is then ~``residual²/gap``, far below PyHessian's power-iteration
tolerance at a fraction of the Hessian-vector products.  Returns the largest *algebraic* eigenvalues
(power iteration returns the largest in magnitude; they agree near a minimum).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from lth_tune.models import eval_mode, model_device
from lth_tune.pruning import parameter_attribute, refresh_all

from ._util import (
    PerturbableParams,
    as_batches,
    clear_grads,
    flatten,
    parameters_to_perturb,
    unflatten,
)
from .hessian import HessianStats

__all__ = [
    "HessianOperator",
    "NotPiecewiseLinearError",
    "check_piecewise_linear",
    "fast_trace_eigen",
    "ggn_diagonal",
    "ggn_trace",
    "lanczos",
    "lanczos_top_eig",
]


class NotPiecewiseLinearError(ValueError):
    """The model/loss is not one for which the GGN diagonal equals the Hessian diagonal."""


_PL_OK: tuple[type, ...] = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.Hardtanh, nn.PReLU,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout,
    nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.BatchNorm1d, nn.BatchNorm2d,
    nn.BatchNorm3d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d, nn.Hardsigmoid,
    nn.Sequential, nn.ModuleList, nn.ModuleDict,
)
_NOT_PL: tuple[type, ...] = (
    nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.SELU, nn.CELU, nn.Softplus, nn.Mish, nn.Hardswish,
    nn.LogSigmoid, nn.Softmax, nn.LogSoftmax, nn.Softsign, nn.Tanhshrink, nn.LayerNorm, nn.GroupNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LocalResponseNorm, nn.MultiheadAttention,
    nn.RNNBase, nn.Bilinear, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer,
)


def _criterion_kind(criterion) -> tuple[str, str]:
    """``(kind, reduction)`` for the supported losses."""
    if isinstance(criterion, nn.CrossEntropyLoss) or criterion is F.cross_entropy:
        if getattr(criterion, "weight", None) is not None:
            raise NotImplementedError("CrossEntropyLoss(weight=...) is not supported by the GGN trace")
        return "ce", getattr(criterion, "reduction", "mean")
    if isinstance(criterion, nn.MSELoss) or criterion is F.mse_loss:
        return "mse", getattr(criterion, "reduction", "mean")
    if isinstance(criterion, nn.BCEWithLogitsLoss) or criterion is F.binary_cross_entropy_with_logits:
        if getattr(criterion, "weight", None) is not None or getattr(criterion, "pos_weight", None) is not None:
            raise NotImplementedError("BCEWithLogitsLoss(weight/pos_weight) is not supported by the GGN trace")
        return "bce", getattr(criterion, "reduction", "mean")
    raise NotImplementedError(
        f"GGN-diagonal trace supports CrossEntropyLoss, MSELoss, BCEWithLogitsLoss; got {criterion!r}")


def check_piecewise_linear(model: nn.Module, criterion=None, *, unknown: str = "warn") -> list[str]:
    """Check that the exact-trace identity diag(H) = diag(GGN) applies to ``model`` (see module doc).

    Raises :class:`NotPiecewiseLinearError` for modules known to be smooth/normalising and for shared
    parameters; for leaf modules of unknown type ``unknown`` = ``"warn"`` (default), ``"raise"`` or
    ``"ignore"``.  Returns the list of unknown module types.  Functional ops inside ``forward`` are not
    visible and not checked.
    """
    if criterion is not None:
        _criterion_kind(criterion)
    bad, unknown_types = [], []
    for name, m in model.named_modules():
        if isinstance(m, _NOT_PL):
            bad.append(f"{name or '<root>'}: {type(m).__name__}")
        elif not isinstance(m, _PL_OK) and not list(m.children()):
            unknown_types.append(f"{name or '<root>'}: {type(m).__name__}")
    seen: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            bad.append(f"parameter shared by {seen[id(p)]} and {name}")
        seen[id(p)] = name
    if bad:
        raise NotPiecewiseLinearError(
            "GGN-diagonal trace is exact only for piecewise-linear nets without weight sharing; found "
            + ", ".join(bad) + ". Use method='pyhessian' (Hutchinson) instead.")
    if unknown_types:
        msg = ("cannot verify that these modules are piecewise linear / affine in each parameter "
               "(GGN-diagonal trace may not be exact): " + ", ".join(unknown_types))
        if unknown == "raise":
            raise NotPiecewiseLinearError(msg)
        if unknown == "warn":
            warnings.warn(msg, stacklevel=2)
    return unknown_types


def _loss_factor(kind: str, out: Tensor) -> Tensor:
    """``U`` (K, B, D) with ``H_ℓ(out_b) = Σ_k U[k, b] U[k, b]ᵀ`` for the per-sample loss (unscaled)."""
    B, D = out.shape
    eye = torch.eye(D, dtype=out.dtype, device=out.device)
    if kind == "ce":  # diag(p) - p pᵀ = A Aᵀ, column k of A = √p_k (e_k - p)
        p = torch.softmax(out, dim=-1)
        return p.sqrt().T.unsqueeze(-1) * (eye.unsqueeze(1) - p.unsqueeze(0))
    if kind == "bce":  # diag(s (1 - s))
        s = torch.sigmoid(out)
        return (s * (1 - s)).sqrt().T.unsqueeze(-1) * eye.unsqueeze(1)
    return math.sqrt(2.0) * eye.unsqueeze(1).expand(D, B, D)  # mse: 2 I


def _loss_scale(kind: str, reduction: str, n_total: int, n_out: int) -> float:
    if reduction == "sum":
        return 1.0
    if reduction != "mean":
        raise NotImplementedError(f"reduction={reduction!r}")
    return 1.0 / n_total if kind == "ce" else 1.0 / (n_total * n_out)


def _check_targets(kind: str, criterion, y: Tensor) -> None:
    ignore = getattr(criterion, "ignore_index", -100)
    if kind == "ce" and not y.is_floating_point() and bool((y == ignore).any()):
        raise NotImplementedError("targets equal to ignore_index are not supported")


_LAYERWISE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _layerwise_modules(model: nn.Module, space: PerturbableParams):
    """``{module: {leaf: index in space}}`` if every perturbable parameter lives in a supported layer, else None."""
    modules = dict(model.named_modules())
    table: dict[nn.Module, dict[str, int]] = {}
    for i, name in enumerate(space.names):
        mod_name, base = parameter_attribute(name)
        m = modules[mod_name]
        if not isinstance(m, _LAYERWISE) or base not in ("weight", "bias"):
            return None
        if isinstance(m, (nn.Conv1d, nn.Conv2d)) and (m.groups != 1 or isinstance(m.padding, str)
                                                      or m.padding_mode != "zeros"):
            return None
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is None:
            return None
        table.setdefault(m, {})[base] = i
    return table


class _LayerAccumulator:
    """Σ_{k,b} (∂(U_kᵀ f_b)/∂θ)² for the parameters of one layer, fed one factor ``k`` at a time.

    ``a`` is the layer input (B, ...), ``g`` the factor backpropagated to the layer output (B, ...).
    Linear on 2-D inputs: the per-sample gradient is ``g aᵀ``, so Σ_{k,b} g² (a²)ᵀ is accumulated as Σ_k g²
    and finished with one matmul -- no per-sample gradients.  Linear on N-D inputs and Conv1d/2d (via
    unfold) form per-sample gradients of one factor at a time; eval BatchNorm (y = γ x̂ + β) is closed form.
    """

    def __init__(self, m: nn.Module, a: Tensor):
        self.m, self.a = m, a
        self.sums: dict[str, Tensor] = {}
        self.cols = self.xhat = None
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            if isinstance(m, nn.Conv1d):
                self.cols = F.unfold(a.unsqueeze(-2), (1, m.kernel_size[0]), dilation=(1, m.dilation[0]),
                                     padding=(0, m.padding[0]), stride=(1, m.stride[0]))
            else:
                self.cols = F.unfold(a, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            shape = (1, -1) + (1,) * (a.dim() - 2)
            xhat = (a - m.running_mean.view(shape)) / torch.sqrt(m.running_var.view(shape) + m.eps)
            self.xhat = xhat.reshape(a.shape[0], a.shape[1], -1)

    def _add(self, key: str, value: Tensor) -> None:
        if key in self.sums:
            self.sums[key] += value
        else:
            self.sums[key] = value

    def add(self, g: Tensor) -> None:
        m, a, B = self.m, self.a, self.a.shape[0]
        if isinstance(m, nn.Linear):
            if a.dim() == 2:
                self._add("g2", g.square())
            else:
                g3 = g.reshape(B, -1, g.shape[-1])
                per = torch.einsum("blo,bli->boi", g3, a.reshape(B, -1, a.shape[-1]))
                self._add("weight", per.square_().sum(0))
                self._add("bias", g3.sum(1).square_().sum(0))
        elif self.cols is not None:
            g3 = g.reshape(B, g.shape[1], -1)
            per = torch.einsum("bol,bjl->boj", g3, self.cols)
            self._add("weight", per.square_().sum(0))
            self._add("bias", g3.sum(-1).square_().sum(0))
        else:
            g3 = g.reshape(B, g.shape[1], -1)
            self._add("weight", (g3 * self.xhat).sum(-1).square_().sum(0))
            self._add("bias", g3.sum(-1).square_().sum(0))

    def result(self) -> dict[str, Tensor]:
        if "g2" in self.sums:
            g2 = self.sums["g2"]
            return {"weight": g2.T @ self.a.square(), "bias": g2.sum(0)}
        return self.sums


def _per_example_bytes(mods, records) -> int:
    """Peak memory per example: all layers' factor gradients at once (one factor) plus the largest layer's
    per-sample gradients / unfolded input (those are formed one layer at a time)."""
    outs, peak = 0, 0
    for m in mods:
        a, z = records[m][0]
        B = a.shape[0]
        outs += z.numel() // B
        if isinstance(m, (nn.Conv1d, nn.Conv2d)) or (isinstance(m, nn.Linear) and a.dim() > 2):
            k = math.prod(m.kernel_size) if hasattr(m, "kernel_size") else 1
            peak = max(peak, 2 * m.weight.numel() + k * (a.numel() // B))
    return 2 * (outs + peak) * 4


def _ggn_layerwise(model, kind, criterion, batches, space, table, chunk_size, memory_budget, diag):
    """Layer-wise exact GGN diagonal: one forward, then for each loss factor ``k`` one backward pass to the
    layer outputs (``retain_graph``), accumulating squared per-sample gradients layer by layer."""
    records: dict[nn.Module, list[tuple[Tensor, Tensor]]] = {}

    def hook(mod, inp, out):
        records.setdefault(mod, []).append((inp[0].detach(), out))

    mods = list(table)
    handles = [m.register_forward_hook(hook) for m in mods]
    n_total = n_out = 0
    try:
        for x, y in batches:
            _check_targets(kind, criterion, y)
            n_total += len(x)
            pending = list(x.split(chunk_size)) if chunk_size else [x]
            while pending:
                xc = pending.pop(0)
                records.clear()
                with torch.enable_grad():
                    f = model(xc)
                for m in mods:
                    if len(records.get(m, ())) != 1:
                        raise NotPiecewiseLinearError(
                            f"{type(m).__name__} called {len(records.get(m, ()))} times in one forward "
                            "(weight sharing): the GGN-diagonal trace is not exact")
                if not chunk_size and len(xc) > 1:
                    per_ex = _per_example_bytes(mods, records)
                    fits = max(1, int(memory_budget // max(1, per_ex)))
                    if fits < len(xc):  # too large: redo in chunks that fit the budget
                        records.clear()
                        del f
                        pending = list(xc.split(fits)) + pending
                        continue
                f2 = f.reshape(len(xc), -1)
                n_out = f2.shape[1]
                U = _loss_factor(kind, f2.detach())  # (K, B, D)
                zs = [records[m][0][1] for m in mods]
                accs = [_LayerAccumulator(m, records[m][0][0]) for m in mods]
                for k in range(U.shape[0]):
                    G = torch.autograd.grad(f, zs, grad_outputs=U[k].reshape(f.shape),
                                            retain_graph=k < U.shape[0] - 1, allow_unused=True)
                    with torch.no_grad():
                        for acc, g in zip(accs, G):
                            if g is not None:
                                acc.add(g)
                with torch.no_grad():
                    for m, acc in zip(mods, accs):
                        for leaf, value in acc.result().items():
                            if leaf in table[m]:
                                i = table[m][leaf]
                                diag[i] += value.reshape(diag[i].shape).to(diag[i].dtype)
                del f, zs, accs, G
                records.clear()
    finally:
        for h in handles:
            h.remove()
        records.clear()
    return n_total, n_out


def _ggn_functorch(model, kind, criterion, batches, space, chunk_size, memory_budget, diag):
    """Generic exact GGN diagonal from per-sample Jacobians (``vmap(jacrev)``), any layer types."""
    pdict = {n: p.detach() for n, p in zip(space.names, space.params)}

    def per_sample(params: dict[str, Tensor], xi: Tensor):
        out = functional_call(model, params, (xi.unsqueeze(0),)).reshape(-1)
        return out, out

    jac_fn = vmap(jacrev(per_sample, has_aux=True), in_dims=(None, 0))
    n_total = n_out = 0
    for x, y in batches:
        _check_targets(kind, criterion, y)
        n_total += len(x)
        with torch.no_grad():
            n_out = model(x[:1]).numel()
        cs = chunk_size or max(1, int(memory_budget // max(1, 3 * n_out * space.numel() * x.element_size())))
        for xc in x.split(cs):
            with torch.enable_grad():
                jac, out = jac_fn(pdict, xc)  # jac[name]: (B, D, *shape); out: (B, D)
            with torch.no_grad():
                U = _loss_factor(kind, out.detach())  # (K, B, D)
                for i, name in enumerate(space.names):
                    J = jac[name].detach().flatten(2)  # (B, D, n)
                    V = torch.einsum("kbd,bdn->kbn", U, J)  # a_kᵀ J_b per factor k and sample b
                    diag[i] += V.square().sum(dim=(0, 1)).view_as(diag[i]).to(diag[i].dtype)
            del jac
    return n_total, n_out


def ggn_diagonal(model: nn.Module, criterion, data: Any, *, batch_size: int | None = None,
                 n_batches: int | None = None, chunk_size: int | None = None,
                 memory_budget: int | None = None, check: bool = True, backend: str = "auto") -> list[Tensor]:
    """Exact diagonal of the Gauss-Newton matrix of the mean loss over ``data`` (eval mode).

    Returned as tensors shaped like ``parameters_to_perturb(model).params`` (zero at pruned positions).
    For piecewise-linear nets (module doc) this *is* the Hessian diagonal.

    ``backend``: ``"layerwise"`` -- one forward and ``K`` (= outputs) batched backward passes to the layer
    outputs (``autograd.grad(is_grads_batched=True)``, i.e. vmap), then per layer: Linear
    ``Σ_{k,n} g² ⊗ a²`` as one matmul (no per-sample gradients), Conv1d/2d per-sample gradients via unfold,
    eval BatchNorm in closed form; ``"functorch"`` -- per-sample Jacobians with ``vmap(jacrev)`` for any
    layer types (slower, more memory); ``"auto"`` -- layerwise when every perturbable parameter is in a
    Linear / Conv1d / Conv2d (groups=1, numeric zero padding) / BatchNorm (running stats) layer.
    ``chunk_size`` examples are processed at once (default: what fits ``memory_budget`` bytes of factor and
    per-sample gradients; default budget 256 MiB on CPU, 2 GiB on CUDA).
    ``check`` runs :func:`check_piecewise_linear` first.
    """
    kind, reduction = _criterion_kind(criterion)
    if check:
        check_piecewise_linear(model)
    device = model_device(model)
    batches = as_batches(data, batch_size=batch_size, n_batches=n_batches, device=device)
    space = parameters_to_perturb(model)
    if memory_budget is None:
        memory_budget = (2048 if device.type == "cuda" else 256) * 2**20
    diag = [torch.zeros_like(p) for p in space.params]
    table = _layerwise_modules(model, space) if backend in ("auto", "layerwise") else None
    if backend == "layerwise" and table is None:
        raise NotImplementedError("layerwise GGN backend: unsupported layer/parameter; use backend='functorch'")
    with eval_mode(model):
        try:
            if table is not None:
                n_total, n_out = _ggn_layerwise(model, kind, criterion, batches, space, table, chunk_size,
                                                memory_budget, diag)
            else:
                n_total, n_out = _ggn_functorch(model, kind, criterion, batches, space, chunk_size,
                                                memory_budget, diag)
        finally:
            refresh_all(model)
    scale = _loss_scale(kind, reduction, n_total, n_out)
    return [(d * scale * m).to(p.dtype) for d, m, p in zip(diag, space.masks, space.params)]


def ggn_trace(model: nn.Module, criterion, data: Any, **kwargs) -> HessianStats:
    """Exact Hessian trace for piecewise-linear nets (= trace of the GGN), as a :class:`HessianStats`.

    ``trace_se`` is 0.0 (deterministic).  Keyword arguments as :func:`ggn_diagonal`.
    """
    t0 = time.perf_counter()
    diag = ggn_diagonal(model, criterion, data, **kwargs)
    tr = float(sum(d.double().sum() for d in diag))
    dt = time.perf_counter() - t0
    return HessianStats(method="ggn_diag", trace=tr, trace_se=0.0, seconds=dt, trace_seconds=dt)


class HessianOperator:
    """``v -> H v`` on flat vectors in the unpruned subspace (mean loss over ``batches``, current mode).

    One batch: the gradient graph is built once (``autograd.grad(create_graph=True)``, so ``.grad`` is
    untouched) and reused.  Several batches: a size-weighted sum, one forward/backward per batch per
    product.  Inputs and outputs are masked.  Use inside ``eval_mode(model)`` for eval-mode Hessians.
    """

    def __init__(self, model: nn.Module, criterion, batches: list[tuple[Tensor, Tensor]],
                 space: PerturbableParams | None = None):
        self.model, self.criterion, self.batches = model, criterion, batches
        self.space = space or parameters_to_perturb(model)
        self.params = list(self.space.params)
        self.mask = flatten(self.space.masks)
        self.dim = self.mask.numel()
        self.n_total = sum(len(x) for x, _ in batches)
        self.n_calls = 0
        self._grads = self._grad_graph(*batches[0]) if len(batches) == 1 else None

    def _grad_graph(self, x: Tensor, y: Tensor):
        loss = self.criterion(self.model(x), y)
        return torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)

    def _hvp(self, grads, v: list[Tensor]) -> list[Tensor]:
        idx = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        hv = torch.autograd.grad([grads[i] for i in idx], self.params, grad_outputs=[v[i] for i in idx],
                                 retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if h is None else h for h, p in zip(hv, self.params)]

    def __call__(self, v: Tensor) -> Tensor:
        self.n_calls += 1
        v = v * self.mask
        vs = unflatten(v, self.params)
        if self._grads is not None:
            out = flatten(self._hvp(self._grads, vs))
        else:
            out = torch.zeros_like(v)
            for x, y in self.batches:
                grads = self._grad_graph(x, y)
                out += flatten(self._hvp(grads, vs)) * (len(x) / self.n_total)
                del grads
        return out * self.mask

    def close(self) -> None:
        self._grads = None


def lanczos(matvec: Callable[[Tensor], Tensor], v0: Tensor, *, k: int = 1, max_iter: int = 100,
            tol: float = 1e-3) -> tuple[Tensor, Tensor, int]:
    """Largest-algebraic ``k`` eigenpairs of a symmetric operator by Lanczos with full reorthogonalisation.

    ``v0`` is the start vector (its support defines the subspace).  Converged when every wanted Ritz pair
    has residual ``|β_j s_{j,i}| <= tol·|θ_i|``.  Returns ``(eigenvalues (k,), eigenvectors (k, n), iters)``.
    """
    n = v0.numel()
    max_iter = min(max_iter, n)
    Q = torch.zeros(min(max_iter + 1, 16), n, dtype=v0.dtype, device=v0.device)  # grown on demand
    Q[0] = v0 / v0.norm()
    alphas: list[float] = []
    betas: list[float] = []
    theta = s = None
    for j in range(max_iter):
        w = matvec(Q[j])
        alpha = float(torch.dot(w, Q[j]))
        alphas.append(alpha)
        basis = Q[: j + 1]
        for _ in range(2):  # classical Gram-Schmidt twice = full reorthogonalisation
            w = w - basis.T @ (basis @ w)
        beta = float(w.norm())
        T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if j > 0:
            off = torch.tensor(betas, dtype=torch.float64)
            T += torch.diag(off, 1) + torch.diag(off, -1)
        evals, evecs = torch.linalg.eigh(T)
        kk = min(k, j + 1)
        theta = evals.flip(0)[:kk]
        s = evecs.flip(1)[:, :kk]
        resid = (beta * s[-1, :]).abs()
        done = kk == k and bool((resid <= tol * theta.abs().clamp_min(1e-30)).all())
        if done or beta <= 1e-12 * max(1.0, abs(alpha)) or j + 1 == max_iter:
            break
        betas.append(beta)
        if j + 1 == Q.shape[0]:
            Q = torch.cat([Q, torch.zeros_like(Q[: min(Q.shape[0], max_iter + 1 - Q.shape[0])])])
        Q[j + 1] = w / beta
    m = len(alphas)
    vecs = (s.T.to(Q.dtype) @ Q[:m])
    vecs = vecs / vecs.norm(dim=1, keepdim=True)
    return theta.to(v0.dtype), vecs, m


def _start_vector(space: PerturbableParams, seed: int | None, device: torch.device, dtype) -> Tensor:
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)
    mask = flatten(space.masks)
    return torch.randn(mask.numel(), generator=g, device=device, dtype=dtype) * mask


def lanczos_top_eig(model: nn.Module, criterion, data: Any, *, top_n: int = 1, max_iter: int = 100,
                    tol: float = 1e-3, batch_size: int | None = None, n_batches: int | None = None,
                    seed: int | None = 0) -> HessianStats:
    """Top ``top_n`` Hessian eigenpairs (eval mode, unpruned subspace) by Lanczos; see :func:`lanczos`.

    Memory: ``(iterations+1) x P`` for the Krylov basis.  Mode and ``.grad`` are restored/cleared.
    """
    device = model_device(model)
    batches = as_batches(data, batch_size=batch_size, n_batches=n_batches, device=device)
    space = parameters_to_perturb(model)
    t0 = time.perf_counter()
    with eval_mode(model):
        clear_grads(model)
        op = HessianOperator(model, criterion, batches, space)
        try:
            v0 = _start_vector(space, seed, device, space.params[0].dtype)
            evals, evecs, _ = lanczos(op, v0, k=top_n, max_iter=max_iter, tol=tol)
        finally:
            op.close()
            clear_grads(model)
    dt = time.perf_counter() - t0
    vectors = [[t.clone() for t in unflatten(evecs[i] * op.mask, space.params)] for i in range(len(evals))]
    return HessianStats(method="lanczos", top_eigenvalues=[float(e) for e in evals], eigenvectors=vectors,
                        n_hvp=op.n_calls, seconds=dt, eig_seconds=dt)


def fast_trace_eigen(model: nn.Module, criterion, data: Any, *, n_batches: int | None = None,
                     batch_size: int | None = None, eig_iters: int = 100, tol: float = 1e-3, top_n: int = 1,
                     compute_trace: bool = True, compute_eigen: bool = True, seed: int | None = 0,
                     chunk_size: int | None = None, check: bool = True, backend: str = "auto") -> HessianStats:
    """Fast counterpart of :func:`pyhessian_trace_eigen`: GGN-diagonal trace + Lanczos eigenpairs."""
    out = HessianStats(method="fast")
    t0 = time.perf_counter()
    if compute_trace:
        tr = ggn_trace(model, criterion, data, batch_size=batch_size, n_batches=n_batches,
                       chunk_size=chunk_size, check=check, backend=backend)
        out.trace, out.trace_se, out.trace_seconds = tr.trace, tr.trace_se, tr.trace_seconds
    if compute_eigen:
        ev = lanczos_top_eig(model, criterion, data, top_n=top_n, max_iter=eig_iters, tol=tol,
                             batch_size=batch_size, n_batches=n_batches, seed=seed)
        out.top_eigenvalues, out.eigenvectors = ev.top_eigenvalues, ev.eigenvectors
        out.n_hvp, out.eig_seconds = ev.n_hvp, ev.eig_seconds
    out.seconds = time.perf_counter() - t0
    return out
