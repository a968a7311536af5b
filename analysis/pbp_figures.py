"""Paper 004 figures from a PBP / PFT experiment (``experiment.kind: pbp``).

* Figure 4 — ``pbp_bound_vs_sparsity.png``: the certified Theorem-1 bound on the 0–1 error of the posterior Q,
  the test error of Q and the test error of the stochastic prior P against the target sparsity, one line style
  per α. Every trial's certificate is recomputed from its reported ingredients (R̂_m, m, KL, n, δ, δ′) with the
  union bound over the study's K declared grid points (:func:`analysis.selection.certified_pbp_table`), so selecting the best
  configuration of each (α, sparsity) cell by its bound (App. D.2) leaves every plotted bound valid with
  probability ≥ 1 − δ − δ′. With several seeds (``seed`` searched) the per-seed selections are averaged
  (error bars: 95% normal interval over seeds). The selected rows go to ``pbp_certified.csv``.
* Figure 1 — ``pft_vs_baseline.png`` (PFT runs, ``pbp.mode: pft``): test error of the PFT mask vs the one-shot
  baseline mask (magnitude / SNIP / random), both fine-tuned the same way, against sparsity, averaged over
  the remaining searched keys (normally seeds).
* Figure 2 (right) — ``noise_robustness.png`` (PFT runs with ``pbp.noise_variances``): the relative drop in
  accuracy on S of the dense network, the one-shot pruned network and the PFT network when every weight they use
  is perturbed with N(0, v²) noise, against v², one panel per (criterion, sparsity); mean and 95% normal interval
  over seeds. The values are also written to ``noise_robustness.csv``.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.common import column_or_constant, save
from analysis.selection import certified_pbp_table, pbp_final_rows

__all__ = ["PFT_COLUMNS", "figure1", "figure2_noise", "figure4", "noise_table", "run_pbp_analyses"]

PFT_COLUMNS = ("stage", "test_acc_pft", "test_acc_baseline")
_STYLES = ("-", "--", ":", "-.")


def _mean_ci(g: pd.core.groupby.DataFrameGroupBy, col: str) -> tuple[pd.Series, pd.Series]:
    mean = g[col].mean()
    count = g[col].count()
    ci = 1.96 * g[col].std().fillna(0.0) / np.sqrt(count.clip(lower=1))
    return mean, ci


def figure4(table: pd.DataFrame, out: Path, *, k: int | None = None) -> Path:
    """Paper 004 Figure 4: bound and test error of Q, test error of P vs sparsity, one line style per α."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    quantities = (("bound_K", "bound on Q (0–1, certified)", "tab:blue"),
                  ("test_err_posterior", "test error of Q", "tab:orange"),
                  ("test_err_prior", "test error of P", "tab:green"))
    table = table.assign(bound_K=table["bound_K"].clip(upper=1.0))  # a bound ≥ 1 is vacuous: drawn at 1
    for i, (alpha, sub) in enumerate(table.groupby("alpha")):
        g = sub.groupby("sparsity_target")
        for col, label, color in quantities:
            mean, ci = _mean_ci(g, col)
            ax.errorbar(mean.index, mean.values, yerr=ci.values, color=color, linestyle=_STYLES[i % len(_STYLES)],
                        marker="o", markersize=3, capsize=2, label=f"{label}, α={alpha:g}")
    ax.set_xlabel("sparsity s (target)")
    ax.set_ylabel("error (bounds ≥ 1 drawn at 1)")
    ax.set_ylim(0.0, 1.02)
    conf = ""
    if "cert_confidence" in table and len(table):
        conf = f", confidence {table['cert_confidence'].iloc[0]:.2f}"
    ax.set_title(f"PAC-Bayes pruning: bound and test error (K={k or table['grid_size_K'].iloc[0]}{conf})",
                 fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    return save(fig, out / "pbp_bound_vs_sparsity.png")


def figure1(study: dict, df: pd.DataFrame, out: Path) -> Path | None:
    """Paper 004 Figure 1: PFT vs the one-shot baseline mask, test error vs sparsity per criterion."""
    rows = pbp_final_rows(df, "pft", PFT_COLUMNS).copy()
    if rows.empty:
        return None
    rows["criterion"] = column_or_constant(rows, study, "pbp.init_criterion").astype(str)
    rows["sparsity_target"] = column_or_constant(rows, study, "pbp.sparsity").astype(float)
    rows["err_pft"] = 1.0 - rows["test_acc_pft"]
    rows["err_baseline"] = 1.0 - rows["test_acc_baseline"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (crit, sub) in enumerate(rows.groupby("criterion")):
        g = sub.groupby("sparsity_target")
        for col, style, marker, label in (("err_baseline", "--", "s", "one-shot"), ("err_pft", "-", "o", "+ PFT")):
            mean, ci = _mean_ci(g, col)
            ax.errorbar(mean.index, mean.values, yerr=ci.values, color=colors[i % len(colors)], linestyle=style,
                        marker=marker, markersize=5, mfc="white" if col == "err_baseline" else None, capsize=2,
                        label=f"{crit} {label}")
    ax.set_xlabel("sparsity s")
    ax.set_ylabel("test error")
    ax.set_title("Probabilistic fine-tuning vs one-shot pruning (mean, 95% normal interval over seeds)", fontsize=9)
    ax.legend(fontsize=7)
    return save(fig, out / "pft_vs_baseline.png")


NOISE_TAGS = {"dense": ("unpruned", "0.4"), "baseline": ("one-shot", "tab:red"), "pft": ("PFT", "tab:blue")}


def noise_table(study: dict, df: pd.DataFrame) -> pd.DataFrame:
    """One row per PFT trial, network (dense / baseline / pft) and variance v²: the relative accuracy drop."""
    rows = pbp_final_rows(df, "pft", ("stage", "noise_variances"))
    if rows.empty:
        return pd.DataFrame()
    criterion = column_or_constant(rows, study, "pbp.init_criterion").astype(str)
    sparsity = column_or_constant(rows, study, "pbp.sparsity").astype(float)
    records = []
    for (idx, row), crit, s in zip(rows.iterrows(), criterion, sparsity):
        variances = json.loads(row["noise_variances"])
        for tag in NOISE_TAGS:
            for v, drop in zip(variances, json.loads(row[f"noise_drop_{tag}"])):
                records.append({"trial_id": row.get("trial_id", idx), "criterion": crit, "sparsity_target": s,
                                "network": tag, "variance": v, "drop": drop})
    return pd.DataFrame.from_records(records)


def figure2_noise(table: pd.DataFrame, out: Path) -> Path | None:
    """Paper 004 Figure 2 (right): relative accuracy drop under weight noise vs v², unpruned / one-shot / PFT."""
    if table.empty:
        return None
    panels = sorted(table.groupby(["criterion", "sparsity_target"]).groups)
    cols = min(3, len(panels))
    nrows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.4 * nrows), squeeze=False, sharey=True)
    for ax, (crit, s) in zip(axes.flat, panels):
        sub = table[(table["criterion"] == crit) & (table["sparsity_target"] == s)]
        for tag, (label, color) in NOISE_TAGS.items():
            mean, ci = _mean_ci(sub[sub["network"] == tag].groupby("variance"), "drop")
            ax.errorbar(mean.index, mean.values, yerr=ci.values, color=color, marker="o", markersize=3, capsize=2,
                        label=label, linestyle="--" if tag == "dense" else "-")
        ax.set_xscale("log")
        ax.set_xlabel("noise variance v²")
        ax.set_title(f"{crit}, sparsity {s:g}", fontsize=9)
        ax.axhline(0, color="0.6", linewidth=0.8)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("relative accuracy drop on S")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Robustness to weight noise W → W + vζ (paper 004 Fig. 2 right)", fontsize=10)
    return save(fig, out / "noise_robustness.png")


def run_pbp_analyses(study: dict, df: pd.DataFrame, out: str | Path, exp_dir: str | Path | None = None,
                     delta: float | None = None) -> list[Path]:
    """Every PBP/PFT analysis whose columns exist in ``df``; [] for other experiments."""
    out = Path(out)
    written: list[Path] = []
    table = certified_pbp_table(study, df, delta)
    if not table.empty:
        out.mkdir(parents=True, exist_ok=True)
        written.append(figure4(table, out))
        cols = [c for c in ("trial_id", "alpha", "sparsity_target", "seed_", "bound_K", "bound_kl_K", "bound",
                            "bound_kl", "cert_emp_risk_mc", "cert_risk_upper", "cert_kl", "cert_n", "cert_m",
                            "grid_size_K", "test_err_posterior", "test_err_prior", "density_posterior",
                            "config/pbp.prior_var", "config/pbp.posterior_lr") if c in table]
        path = out / "pbp_certified.csv"
        table[cols].to_csv(path, index=False)
        written.append(path)
    fig1 = figure1(study, df, out)
    if fig1 is not None:
        written.append(fig1)
    noise = noise_table(study, df)
    if not noise.empty:
        out.mkdir(parents=True, exist_ok=True)
        written.append(figure2_noise(noise, out))
        noise.to_csv(out / "noise_robustness.csv", index=False)
        written.append(out / "noise_robustness.csv")
    return written
