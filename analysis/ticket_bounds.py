"""Paper 000 Figure 4 (PAC-Bayes bounds of IMP tickets), the selected certificate's report and its
sensitivity to m, δ, δ′ and K. The selection itself (the union bound over the declared grid) is
:mod:`analysis.selection`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.common import markdown_table
from analysis.selection import _plain, certified_selection
from lth_tune.pacbayes import certify

__all__ = ["describe", "figure4", "run_bound_analyses", "sensitivity_table"]

SENSITIVITY_M = (10, 30, 100, 300, 1000, 3000, 10000, 100000)
SENSITIVITY_DELTA = (0.2, 0.1, 0.05, 0.01, 0.001, 1e-6)
SENSITIVITY_K_FACTORS = (1, 10, 100, 1000, 10**6)


def describe(sel: dict[str, Any]) -> str:
    c = sel["certificate"]
    cfg = ", ".join(f"{k}={v}" for k, v in sel["config"].items() if k in _searched_keys(sel)) or "-"
    return (f"certified {sel['formulation']}: 0-1 risk ≤ {sel['bound']:.4f} with probability ≥ "
            f"{sel['confidence']:.3f} (δ={sel['delta']:g}, δ′={sel['delta_prime']:g}; union bound over "
            f"K={sel['K']} = {sel['K_grid']} grid points × {sel['J_prior_sigmas']} σ_p × {sel['L_levels']} "
            f"level(s): δ/K={sel['delta_eff']:.3g}, δ′/K={sel['delta_prime_eff']:.3g}); R̂_m={c['emp_risk_mc']:.4f} "
            f"(m={c['m']}) → R_up={c['risk_upper']:.4f}, KL={c['kl']:.1f}, n={c['n']}, "
            f"(KL+log(2√n/δ_eff))/n={c['epsilon']:.4f}; chosen: trial {sel['trial_id']} level {sel['level']} "
            f"[{cfg}] σ_p={sel['prior_sigma']:g}; test error {sel['test_error']:.4f} (θ̄), "
            f"{_fmt(sel['gibbs_test_error'])} (Gibbs Q)")


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _searched_keys(sel: dict[str, Any]) -> list[str]:
    return list(sel["config"])


# --------------------------------------------------------------------------- sensitivity


def sensitivity_table(sel: dict[str, Any]) -> pd.DataFrame:
    """The selected certificate recomputed from its ingredients (R̂_m, KL, n) while varying one of m
    (R̂_m held at its observed value: "had m networks given the same mean error"), δ, δ′ or K
    (the others as reported)."""
    c = sel["certificate"]
    base = {"delta": sel["delta"], "delta_prime": sel["delta_prime"], "grid_size": sel["K"], "m": c["m"]}
    rows = []

    def add(what: str, value: Any, **over: Any) -> None:
        a = {**base, **over}
        if a["delta"] + a["delta_prime"] >= 1:
            return
        cert = certify(c["emp_risk_mc"], a["m"], c["kl"], c["n"], delta=a["delta"], delta_prime=a["delta_prime"],
                       form="kl", grid_size=a["grid_size"])
        rows.append({"vary": what, "value": value, "m": a["m"], "delta": a["delta"],
                     "delta_prime": a["delta_prime"], "K": a["grid_size"],
                     "risk_upper": cert.risk_upper, "kl_term": cert.epsilon, "bound": cert.bound,
                     "is_reported": a == base})

    for m in sorted(set(SENSITIVITY_M) | {c["m"]}):
        add("m", m, m=m)
    for d in sorted(set(SENSITIVITY_DELTA) | {sel["delta"]}, reverse=True):
        add("delta", d, delta=d)
    for d in sorted(set(SENSITIVITY_DELTA) | {sel["delta_prime"]}, reverse=True):
        add("delta_prime", d, delta_prime=d)
    ks = sorted({1, sel["K_grid"], sel["K"], *(sel["K"] * f for f in SENSITIVITY_K_FACTORS)})
    for k in ks:
        add("K", k, grid_size=k)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- Figure 4


def _terms_at(df: pd.DataFrame, prefix: str, j: int, sel: dict[str, Any]) -> pd.DataFrame:
    """Risk term R_up and KL term ε of every row for σ_p index j, recertified at the selection's K."""
    out = []
    for _, row in df.iterrows():
        r = row.get(f"{prefix}_sp{j}_emp_risk_mc", row.get(f"{prefix}_emp_risk_mc") if j == 0 else np.nan)
        kl = row.get(f"{prefix}_sp{j}_kl", row.get(f"{prefix}_kl") if j == 0 else np.nan)
        if pd.isna(r) or pd.isna(kl):
            continue
        cert = certify(min(max(float(r), 0.0), 1.0), int(row[f"{prefix}_m"]), float(kl), int(row[f"{prefix}_n"]),
                       delta=sel["delta"], delta_prime=sel["delta_prime"], form="kl", grid_size=sel["K"])
        out.append({"trial_id": row["trial_id"], "level": int(row["level"]), "risk": cert.risk_upper,
                    "kl_term": cert.epsilon, "bound": cert.bound, "test_acc": row.get("test_acc", np.nan),
                    "lr": row.get("config/train.lr", np.nan)})
    return pd.DataFrame(out)


def _rows_for_figure(df: pd.DataFrame, prefix: str, sel: dict[str, Any]) -> pd.DataFrame:
    rows = df[df[f"{prefix}_bound"].notna()]
    return rows[rows["level"] == sel["level"]]


def figure4(df: pd.DataFrame, selections: dict[str, dict[str, Any]], out: Path) -> list[Path]:
    """Paper 000 Figure 4: training-risk term (R_up) vs KL term ((KL + log(2√n/δ_eff))/n) per ticket,
    coloured by test accuracy; left spike-and-slab, right Gaussian zero-mean prior.  ``fig4_bounds.png``
    uses each formulation's selected σ_p (one prior for all tickets, as in the paper); the selected
    ticket is starred.  ``fig4_bounds_all_sigmas.png`` shows every σ_p of the declared grid."""
    prefixes = [p for p in ("ss", "gauss") if p in selections]
    if not prefixes:
        return []
    written = []
    accs = df["test_acc"].dropna() if "test_acc" in df else pd.Series(dtype=float)
    vmin, vmax = (float(accs.min()), float(accs.max())) if len(accs) else (0.0, 1.0)
    fig, axes = plt.subplots(1, len(prefixes), figsize=(5.6 * len(prefixes), 4.6), squeeze=False,
                             constrained_layout=True)
    sc = None
    for ax, p in zip(axes[0], prefixes):
        sel = selections[p]
        pts = _terms_at(_rows_for_figure(df, p, sel), p, sel["prior_index"], sel)
        sc = _scatter(ax, pts, sel, vmin, vmax)
        ax.set_title(f"{sel['formulation']}\nσ_p={sel['prior_sigma']:g}, K={sel['K']}", fontsize=9)
    fig.colorbar(sc, ax=list(axes[0]), label="test accuracy")
    fig.suptitle("Paper 000 Fig. 4: risk term vs KL term of the bound-optimised posterior", fontsize=10)
    written.append(_save_nolayout(fig, out / "fig4_bounds.png"))

    J = max(selections[p]["J_prior_sigmas"] for p in prefixes)
    fig, axes = plt.subplots(len(prefixes), J, figsize=(4.2 * J + 1, 3.8 * len(prefixes)), squeeze=False,
                             constrained_layout=True)
    for i, p in enumerate(prefixes):
        sel = selections[p]
        rows = _rows_for_figure(df, p, sel)
        for j in range(J):
            ax = axes[i, j]
            pts = _terms_at(rows, p, j, sel)
            col = f"{p}_sp{j}_prior_sigma"
            sigma = rows[col].dropna().iloc[0] if col in rows and rows[col].notna().any() else np.nan
            sc = _scatter(ax, pts, sel if j == sel["prior_index"] else None, vmin, vmax)
            ax.set_title(f"{p}: σ_p={sigma:g}", fontsize=9)
    fig.colorbar(sc, ax=list(axes.flat), label="test accuracy")
    written.append(_save_nolayout(fig, out / "fig4_bounds_all_sigmas.png"))
    return written


def _scatter(ax, pts: pd.DataFrame, sel: dict[str, Any] | None, vmin: float, vmax: float):
    if pts.empty:
        ax.text(0.5, 0.5, "no results", ha="center", transform=ax.transAxes)
        return ax.scatter([], [], c=[], vmin=vmin, vmax=vmax, cmap="viridis")
    sc = ax.scatter(pts["kl_term"], pts["risk"], c=pts["test_acc"], cmap="viridis", vmin=vmin, vmax=vmax,
                    s=36, edgecolors="k", linewidths=0.3)
    if len(pts) <= 40 and pts["lr"].notna().any():
        for _, r in pts.iterrows():
            ax.annotate(f"{r['lr']:.3g}", (r["kl_term"], r["risk"]), fontsize=6, xytext=(3, 2),
                        textcoords="offset points")
    if sel is not None:
        hit = pts[(pts["trial_id"] == sel["trial_id"]) & (pts["level"] == sel["level"])]
        ax.scatter(hit["kl_term"], hit["risk"], marker="*", s=220, facecolors="none", edgecolors="red",
                   label=f"selected (bound {sel['bound']:.3f})")
        ax.legend(fontsize=7, loc="best")
    ax.set_xlabel("KL term  (KL + ln(2√n/δ_eff)) / n", fontsize=8)
    ax.set_ylabel("risk term  R_up (0-1 loss)", fontsize=8)
    ax.tick_params(labelsize=7)
    return sc


def _save_nolayout(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- entry point


def run_bound_analyses(study: dict, df: pd.DataFrame, out: str | Path, exp_dir: str | Path | None = None,
                       delta: float | None = None) -> list[Path]:
    """Certified selection (JSON + Markdown, printed), Figure 4 and the m/δ/K sensitivity table.

    Returns [] when the results carry no ``ss_bound`` column (no bounds were computed)."""
    if "ss_bound" not in df.columns or not df["ss_bound"].notna().any():
        return []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    selections: dict[str, dict[str, Any]] = {}
    for prefix in ("ss", "gauss"):
        if f"{prefix}_bound" in df.columns and df[f"{prefix}_bound"].notna().any():
            selections[prefix] = certified_selection(study, df, prefix=prefix, delta=delta)
    written = []
    sens = {p: sensitivity_table(s) for p, s in selections.items()}
    payload = {p: {k: v for k, v in s.items() if k != "candidates"} | {"num_candidates": s["num_candidates"]}
               for p, s in selections.items()}
    path = out / "bound_selection.json"
    path.write_text(json.dumps({"selections": payload, "candidates": {p: s["candidates"] for p, s in selections.items()},
                                "sensitivity": {p: t.to_dict(orient="records") for p, t in sens.items()}},
                               indent=2, default=_plain))
    written.append(path)
    path = out / "bound_selection.md"
    path.write_text(_markdown(selections, sens))
    written.append(path)
    for p, t in sens.items():
        t.to_csv(out / f"bound_sensitivity_{p}.csv", index=False)
        written.append(out / f"bound_sensitivity_{p}.csv")
    written.extend(figure4(df, selections, out))
    return written


def _markdown(selections: dict[str, dict[str, Any]], sens: dict[str, pd.DataFrame]) -> str:
    lines = ["# Certified selection of IMP tickets (paper 000 §4.3, paper 004 Thm. 2 + App. A.3, D.2)", ""]
    for p, sel in selections.items():
        c = sel["certificate"]
        lines += [f"## {sel['formulation']}", "", describe(sel), "",
                  "| quantity | value |", "|---|---|",
                  f"| certified bound on the 0-1 risk | {sel['bound']:.4f} |",
                  f"| confidence 1-δ-δ′ | {sel['confidence']:.3f} (δ={sel['delta']:g}, δ′={sel['delta_prime']:g}) |",
                  (f"| union bound K | {sel['K']} = {sel['K_grid']} (declared grid) × {sel['J_prior_sigmas']} (σ_p) "
                   f"× {sel['L_levels']} ({sel['levels_selected_over']}) |"),
                  f"| δ/K, δ′/K | {sel['delta_eff']:.3g}, {sel['delta_prime_eff']:.3g} |",
                  f"| candidates certified | {sel['num_candidates']} from {sel['num_trials_with_bounds']} trials |",
                  f"| R̂_m (m={c['m']}) → R_up | {c['emp_risk_mc']:.4f} → {c['risk_upper']:.4f} |",
                  f"| KL, n, KL term | {c['kl']:.1f}, {c['n']}, {c['epsilon']:.4f} |",
                  (f"| chosen | trial {sel['trial_id']}, level {sel['level']}, σ_p={sel['prior_sigma']:g}, "
                   f"{json.dumps(sel['config'], default=_plain)} |"),
                  f"| density | {_fmt(sel['density'])} |",
                  f"| test error of θ̄ (test acc) | {sel['test_error']:.4f} ({sel['test_acc']:.4f}) |",
                  f"| test error of the Gibbs posterior Q (certified predictor) | {_fmt(sel['gibbs_test_error'])} |",
                  f"| bound of that trial alone (δ/J) | {_fmt(sel['trial_bound_at_delta_over_J'])} |", "",
                  "Sensitivity (one ingredient varied, the others as reported):", ""]
        t = sens[p].set_index("vary")
        lines += [markdown_table(t), ""]
    return "\n".join(lines)
