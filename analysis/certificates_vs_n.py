"""Certificates against the size of the bound set, for studies that search ``data.num_samples``.

For every size the bound-minimising candidate is selected and certified at δ/K with K over the study's whole
declared grid (:mod:`analysis.selection`), so every reported bound holds simultaneously with probability
≥ 1 − δ − δ′. Reported per size and formulation: the certified bound on the 0–1 risk of the stochastic
predictor, its training Monte-Carlo risk R̂, the KL per bound-set example, the test error of the certified
(Gibbs) predictor and of the deterministic network. Figure ``certificates_vs_n.png``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import FuncFormatter, NullLocator

from analysis.common import markdown_table, save, tickets_only
from analysis.selection import FORMULATION_NAMES, certified_pbp_table, certified_selection

__all__ = ["certificates_vs_n", "run_size_analyses"]

SIZE = "config/data.num_samples"


def certificates_vs_n(study: dict, df: pd.DataFrame) -> pd.DataFrame:
    """One row per (bound-set size, formulation)."""
    if SIZE not in df:
        return pd.DataFrame()
    rows = []
    tickets = tickets_only(df)
    for size, sub in tickets.groupby(SIZE, sort=True):
        for prefix in ("ss", "gauss"):
            if f"{prefix}_bound" not in sub or not sub[f"{prefix}_bound"].notna().any():
                continue
            sel = certified_selection(study, sub, prefix=prefix)
            c = sel["certificate"]
            rows.append({"generated": int(size), "n": c["n"], "formulation": FORMULATION_NAMES[prefix],
                         "certified_bound": sel["bound"], "K": sel["K"], "emp_risk_mc": c["emp_risk_mc"],
                         "m": c["m"], "kl_per_n": c["kl"] / c["n"], "gibbs_test_error": sel["gibbs_test_error"],
                         "deterministic_test_error": sel["test_error"], "density": sel["density"]})
    if "cert_n" in df and df["cert_n"].notna().any():
        for size, sub in df.groupby(SIZE, sort=True):
            table = certified_pbp_table(study, sub)
            if table.empty:
                continue
            best = table.loc[table["bound_kl_K"].idxmin()]
            rows.append({"generated": int(size), "n": int(best["cert_n"]),
                         "formulation": f"PBP posterior (α={best['alpha']:g}, s={best['sparsity_target']:g})",
                         "certified_bound": float(best["bound_kl_K"]), "K": int(best["grid_size_K"]),
                         "emp_risk_mc": float(best["cert_emp_risk_mc"]), "m": int(best["cert_m"]),
                         "kl_per_n": float(best["cert_kl"]) / float(best["cert_n"]),
                         "gibbs_test_error": float(best["test_err_posterior"]),
                         "deterministic_test_error": float(best.get("det_test_err", float("nan"))),
                         "density": 1 - float(best["sparsity_target"])})
    return pd.DataFrame(rows)


def figure(table: pd.DataFrame, out: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for formulation, sub in table.groupby("formulation"):
        sub = sub.sort_values("n")
        line, = axes[0].plot(sub["n"], sub["certified_bound"].clip(upper=1), marker="o", label=f"{formulation}: bound")
        axes[0].plot(sub["n"], sub["gibbs_test_error"], marker="x", linestyle=":", color=line.get_color(),
                     label=f"{formulation}: test error of Q")
        axes[1].plot(sub["n"], sub["kl_per_n"], marker="o", color=line.get_color(), label=formulation)
    axes[0].set_ylabel("0–1 error (bounds ≥ 1 drawn at 1)")
    axes[0].set_title("certified bound vs test error", fontsize=9)
    axes[1].set_ylabel("KL(Q‖P) / n")
    axes[1].set_yscale("log")
    axes[1].set_title("KL per bound-set example", fontsize=9)
    sizes = sorted(table["n"].unique())
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(sizes)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("n (bound-set examples)")
        ax.legend(fontsize=6)
    k = int(table["K"].max())
    fig.suptitle(f"PAC-Bayes certificates against n (union bound over the declared grid, K ≤ {k})", fontsize=10)
    return save(fig, out / "certificates_vs_n.png")


def run_size_analyses(study: dict, df: pd.DataFrame, out: Path) -> list[Path]:
    table = certificates_vs_n(study, df)
    if table.empty:
        return []
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "certificates_vs_n.csv", index=False)
    text = table.set_index("n")
    (out / "certificates_vs_n.md").write_text(
        "# Certificates against n (each certified at δ/K over the declared grid)\n\n" + markdown_table(text) + "\n")
    return [out / "certificates_vs_n.csv", out / "certificates_vs_n.md", figure(table, out)]
