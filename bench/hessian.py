"""Hessian trace and top eigenvalue: PyHessian's defaults vs ``lth_tune.flatness.fast``.

    python bench/hessian.py [--n 2000] [--repeats 3] [--threads 2] [--device cpu|cuda] [--quick]

Workload: an MNIST-1D-shaped MLP (input 40, widths [100, 100], 10 classes: 15,210 parameters) trained for
a few epochs on MNIST-1D generated offline (``mnist1d.data.make_dataset`` with its default arguments,
first 4,000 examples), then 50% of every layer's weights pruned by magnitude
(``torch.nn.utils.prune.l1_unstructured``) and fine-tuned for one epoch.  All measurements use the same
N = 2,000 training examples as one batch, eval mode, cross-entropy (mean).

Contenders
  PyHessian trace   ``hessian(model, criterion, data=(x, y)).trace()`` with its defaults (maxIter=100,
                    tol=1e-3: Hutchinson with Rademacher probes, stopping when the running mean changes
                    by < 0.1% relative); timed including the constructor (forward + create_graph backward).
  fast trace        ``lth_tune.flatness.ggn_trace``: exact Hessian trace of a ReLU net = trace of the
                    Gauss-Newton diagonal (``diag H = diag GGN`` because the net is affine in each single
                    weight for a fixed activation pattern), one forward + 10 vmapped backward passes.
  PyHessian eig     ``hessian(...).eigenvalues()`` defaults (power iteration, maxIter=100, tol=1e-3).
  Lanczos eig       ``lth_tune.flatness.lanczos_top_eig`` (full reorthogonalisation) at several
                    residual tolerances.

References (how "exact" is established on a 15k-parameter net where the dense Hessian is not affordable)
  trace   the GGN-diagonal trace computed in float64.  It is exact for this ReLU net (see above); two
          independent checks are printed: (1) the exact Hessian diagonal at randomly chosen unpruned
          coordinates via Hessian-vector products with unit vectors e_i (H_ii = e_iᵀ H e_i) against the
          GGN diagonal there; (2) a long Hutchinson run (PyHessian, tol=0, --ref-probes probes) whose mean
          must agree within a few standard errors.
  top eig Lanczos in float64 run to a Ritz residual of 1e-10·λ (then |λ − θ| <= residual), cross-checked
          against a long PyHessian power iteration (maxIter=300, tol=1e-8).

Errors are relative to these references; times are medians over ``--repeats`` seeds (PyHessian's probes
and start vectors are random, so its error varies per seed: all seeds' errors are shown).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lth_tune.flatness import ggn_diagonal, ggn_trace, lanczos_top_eig, parameters_to_perturb
from lth_tune.flatness._util import flatten
from lth_tune.flatness.fast import HessianOperator
from lth_tune.flatness.hessian import pyhessian_trace_eigen


def make_mlp() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(40, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(),
                         nn.Linear(100, 10))


def load_mnist1d(n_train: int) -> tuple[torch.Tensor, torch.Tensor]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    d = make_dataset(args)  # generated offline from templates (never downloads)
    x = torch.tensor(d["x"][:n_train], dtype=torch.float32)
    y = torch.tensor(d["y"][:n_train], dtype=torch.int64)
    x = (x - x.mean()) / x.std()
    return x.unsqueeze(1), y  # (N, 1, 40) as lth_tune.data lays MNIST-1D out


def train(model: nn.Module, x, y, epochs: int, lr: float = 0.05, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 100):
            idx = perm[i:i + 100]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    opt.zero_grad(set_to_none=True)


def clone(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Same pruned MLP in another dtype (deepcopy fails on pruned modules after a forward)."""
    m = make_mlp()
    for layer in (1, 3, 5):
        prune.identity(m[layer], "weight")
    m.load_state_dict(model.state_dict())
    return m.to(dtype).to(next(model.parameters()).device)


def timed(fn, sync):
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t0


def exact_diag_entries(model, x, y, idx: torch.Tensor) -> torch.Tensor:
    """H_ii = e_iᵀ H e_i at flat coordinates ``idx`` (Hessian-vector products, vmapped when possible)."""
    ce = nn.CrossEntropyLoss()
    model.eval()
    op = HessianOperator(model, ce, [(x, y)])
    out = []
    for chunk in idx.split(50):
        E = torch.zeros(len(chunk), op.dim, dtype=op.mask.dtype, device=op.mask.device)
        E[torch.arange(len(chunk)), chunk] = 1.0
        vs = [E[:, s:s + p.numel()].reshape(len(chunk), *p.shape)
              for s, p in zip(np.cumsum([0] + [p.numel() for p in op.params[:-1]]), op.params)]
        try:
            hv = torch.autograd.grad(op._grads, op.params, grad_outputs=vs, retain_graph=True,
                                     is_grads_batched=True)
            HE = torch.cat([h.reshape(len(chunk), -1) for h in hv], dim=1)
        except RuntimeError:  # no batched rule for some op: one product at a time
            HE = torch.stack([op(e) for e in E])
        out.append(HE[torch.arange(len(chunk)), chunk])
    op.close()
    return torch.cat(out)


def fmt_err(errs):
    return ", ".join(f"{e:.2e}" for e in errs)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="examples in the Hessian batch")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ref-probes", type=int, default=200, help="probes of the long Hutchinson check")
    ap.add_argument("--spot", type=int, default=200, help="unpruned coordinates checked with e_i H e_i")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="fewer repeats/probes (smoke run)")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.ref_probes, args.spot, args.epochs = 1, 30, 20, 2
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    ce = nn.CrossEntropyLoss()

    # ---------------------------------------------------------------- workload
    torch.manual_seed(0)
    x_all, y_all = load_mnist1d(4000)
    model = make_mlp()
    train(model, x_all, y_all, epochs=args.epochs)
    for layer in (1, 3, 5):
        prune.l1_unstructured(model[layer], "weight", amount=0.5)
    train(model, x_all, y_all, epochs=1, lr=0.02, seed=1)
    model = model.to(device).eval()
    x, y = x_all[: args.n].to(device), y_all[: args.n].to(device)
    space = parameters_to_perturb(model)
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
        loss = float(ce(model(x), y))
    print(f"# workload: MLP 40-100-100-10, {space.numel()} params, {space.n_unpruned()} unpruned "
          f"({1 - space.n_unpruned() / space.numel():.1%} of all params pruned, 50% of weights); "
          f"N={args.n}, train loss {loss:.4f}, acc {acc:.3f}; device={device}, threads={args.threads}")

    # ---------------------------------------------------------------- references
    m64 = clone(model, torch.float64).eval()
    x64 = x.double()
    diag64 = flatten(ggn_diagonal(m64, ce, (x64, y)))
    tr_ref = float(diag64.sum())
    print(f"# reference trace (GGN diagonal, float64): {tr_ref:.6f}")
    g = torch.Generator().manual_seed(123)
    unpruned = torch.nonzero(flatten(space.masks).cpu() > 0).squeeze(1)
    idx = unpruned[torch.randperm(len(unpruned), generator=g)[: args.spot]].to(device)
    (hii, t_spot) = timed(lambda: exact_diag_entries(m64, x64, y, idx), sync)
    spot_err = float(((hii - diag64[idx]).abs() / diag64[idx].abs().clamp_min(1e-300)).max())
    spot_abs = float((hii - diag64[idx]).abs().max())
    print(f"#   check 1: exact e_iᵀHe_i at {len(idx)} random unpruned coordinates vs GGN diagonal: "
          f"max rel diff {spot_err:.2e} (max abs {spot_abs:.2e}) [{t_spot:.1f}s]")
    long_h = pyhessian_trace_eigen(model, ce, (x, y), trace_iters=args.ref_probes, tol=0.0,
                                   compute_eigen=False, seed=999)
    z = (long_h.trace - tr_ref) / long_h.trace_se
    sd_probe = long_h.trace_se * math.sqrt(long_h.n_probes)
    print(f"#   check 2: Hutchinson with {long_h.n_probes} probes: {long_h.trace:.4f} ± {long_h.trace_se:.4f} "
          f"(SE), z = {z:+.2f}; per-probe SD {sd_probe:.3f} = {sd_probe / tr_ref:.1%} of the trace "
          f"[{long_h.trace_seconds:.1f}s, {long_h.trace_seconds / long_h.n_probes * 1e3:.1f} ms/probe]")

    ref_eig = lanczos_top_eig(m64, ce, (x64, y), tol=1e-10, max_iter=400, seed=7)
    lam_ref = ref_eig.top_eig
    print(f"# reference top eigenvalue (Lanczos float64, residual <= 1e-10·λ, {ref_eig.n_hvp} HVPs): "
          f"{lam_ref:.9f}")
    if not args.quick:
        long_p = pyhessian_trace_eigen(model, ce, (x, y), eig_iters=300, tol=1e-8, compute_trace=False,
                                       seed=5)
        print(f"#   check: PyHessian power iteration maxIter=300, tol=1e-8: {long_p.top_eig:.9f} "
              f"(rel diff {abs(long_p.top_eig - lam_ref) / lam_ref:.1e}) [{long_p.eig_seconds:.1f}s]")

    # ---------------------------------------------------------------- timings (contenders interleaved)
    import warnings

    from pyhessian import hessian as PyHessian

    warnings.filterwarnings("ignore", message=r".*create_graph=True.*")
    counter = [0]  # gradients w.r.t. one parameter = 1 (constructor backward) + one per Hessian-vector product
    hook = space.params[-1].register_hook(lambda grad: counter.__setitem__(0, counter[0] + 1))

    def pyhessian_run(seed, what):
        torch.manual_seed(seed)
        model.zero_grad(set_to_none=True)
        counter[0] = 0
        h = PyHessian(model, ce, data=(x, y), cuda=device.type == "cuda")
        out = float(np.mean(h.trace())) if what == "trace" else float(h.eigenvalues()[0][0])
        model.zero_grad(set_to_none=True)
        return out, counter[0] - 1

    ggn_trace(model, ce, (x, y))  # warm-up (first vmap call builds its batching rules)
    lanczos_top_eig(model, ce, (x, y), tol=1e-2)
    tols = (1e-1, 3e-2, 1e-2, 1e-3)
    rows = {k: ([], [], []) for k in ["ph_trace", "fast_trace", "ph_eig", *tols]}

    def record(key, value, ref, dt, n):
        rows[key][0].append(dt)
        rows[key][1].append(abs(value - ref) / abs(ref))
        rows[key][2].append(n)

    for s in range(args.repeats):
        (v, n), dt = timed(lambda s=s: pyhessian_run(s, "trace"), sync)
        record("ph_trace", v, tr_ref, dt, n)
        r, dt = timed(lambda: ggn_trace(model, ce, (x, y)), sync)
        record("fast_trace", r.trace, tr_ref, dt, 0)
        (v, n), dt = timed(lambda s=s: pyhessian_run(s, "eig"), sync)
        record("ph_eig", v, lam_ref, dt, n)
        for tol in tols:
            r, dt = timed(lambda s=s, tol=tol: lanczos_top_eig(model, ce, (x, y), tol=tol, seed=s), sync)
            record(tol, r.top_eig, lam_ref, dt, r.n_hvp)
    hook.remove()
    # one Hessian-vector product on this batch (PyHessian's data mode: graph reused), for the cost model
    hvp_t = []
    model.eval()
    op = HessianOperator(model, ce, [(x, y)])
    v = torch.randn(op.dim, device=device)
    for _ in range(max(5, args.repeats)):
        _, dt = timed(lambda: op(v), sync)
        hvp_t.append(dt)
    op.close()
    t_hvp = min(hvp_t)
    n_1pct = math.ceil((sd_probe / (0.01 * tr_ref)) ** 2)

    # ---------------------------------------------------------------- report
    med = statistics.median
    print()
    print(f"{'method':<42} {'median s':>9} {'min s':>8} {'HVPs':>6}  rel. error (per seed)")
    print("-" * 104)
    names = {"ph_trace": "PyHessian trace() defaults", "fast_trace": "fast exact trace (GGN diag, float32)",
             "ph_eig": "PyHessian eigenvalues() defaults"}
    for key, (ts, errs, ns) in rows.items():
        name = names.get(key) or f"Lanczos top eig, tol={key:g}"
        hv = "-" if key == "fast_trace" else f"{med(ns):g}"
        print(f"{name:<42} {med(ts):>9.3f} {min(ts):>8.3f} {hv:>6}  {fmt_err(errs)}")
        if key == "fast_trace":
            print(f"{'Hutchinson at 1% error (1 SE), cost model':<42} {n_1pct * t_hvp:>9.1f} {'':>8} "
                  f"{n_1pct:>6}  (SD/1%)^2 probes at {t_hvp * 1e3:.0f} ms/HVP")
    print("-" * 104)
    ph, ft, pe = rows["ph_trace"], rows["fast_trace"], rows["ph_eig"]
    print(f"trace: fast exact is {min(ph[0]) / min(ft[0]):.1f}x (min times) / {med(ph[0]) / med(ft[0]):.1f}x (median) "
          f"faster than PyHessian's default trace, whose median error is {med(ph[1]):.2%} "
          f"({med(ph[2]):g} probes; fast: {med(ft[1]):.1e}); "
          f"vs Hutchinson at 1% error: ~{n_1pct * t_hvp / med(ft[0]):.0f}x")
    print(f"       machine-independent view: the fast trace costs {min(ft[0]) / t_hvp:.1f} Hessian-vector "
          f"products' time (min/min); PyHessian's default trace used {med(ph[2]):g} HVPs + its constructor")
    target = med(pe[1])
    ok = [(med(rows[tol][2]), min(rows[tol][0]), tol, max(rows[tol][1])) for tol in tols
          if max(rows[tol][1]) <= target]
    if ok:
        n_lz, t_lz, tol, e_lz = min(ok)  # cheapest in Hessian-vector products (machine independent)
        print(f"top eig: at equal-or-better error (Lanczos tol={tol:g}: worst {e_lz:.1e} <= PyHessian median "
              f"{target:.1e}) Lanczos needs {n_lz:g} vs {med(pe[2]):g} HVPs and is {min(pe[0]) / t_lz:.1f}x "
              f"faster (min times); at tol=1e-3 {min(pe[0]) / min(rows[1e-3][0]):.1f}x with median error "
              f"{med(rows[1e-3][1]):.1e}")
    else:
        print("top eig: no Lanczos tolerance reached PyHessian's error")


if __name__ == "__main__":
    main()
