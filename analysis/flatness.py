"""Paper 000 flatness analyses: Table 1 (Hessian trace by optimiser × sparsity), Figure 1 (label noise),
Figure 2 (1-D loss landscapes along the top Hessian eigenvector).

Inputs are one or more experiments' ``results.csv`` concatenated, with the columns ``optimizer``, ``lr``,
``experiment`` added by :func:`annotate` (from the config columns, or the study constants).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.common import column_or_constant, markdown_table, save

HYPER = {"sam": "train.rho", "nvrm": "train.nvrm_b"}


def annotate(study: dict, df: pd.DataFrame, name: str) -> pd.DataFrame:
    df = df.copy()
    df["experiment"] = name
    df["optimizer"] = column_or_constant(df, study, "train.optimizer")
    df["lr"] = column_or_constant(df, study, "train.lr")
    df["label_noise"] = column_or_constant(df, study, "data.label_noise")
    df["seed"] = column_or_constant(df, study, "seed")
    for key in HYPER.values():
        df[key] = column_or_constant(df, study, key)
    return df


def _hyper_label(row: pd.Series) -> str:
    key = HYPER.get(row["optimizer"])
    return f"{key.split('.')[-1]}={row[key]}" if key else ""


def table1(df: pd.DataFrame, out: Path) -> list[Path]:
    """Trace of the Hessian by optimiser (columns) × sparsity (rows), averaged over seeds.

    As in paper 000 Table 1, SAM's ρ and NVRM's b are the values with the highest mean test accuracy at
    each sparsity, and only the small learning rate of each experiment enters (the smallest lr present).
    """
    if "hessian_trace" not in df or df["hessian_trace"].notna().sum() == 0:
        return []
    d = df[df["hessian_trace"].notna()].copy()
    d = d[d["lr"] == d.groupby("optimizer")["lr"].transform("min")]
    d["sparsity_pct"] = (100 * (1 - d["density"])).round(1)
    d["hyper"] = d.apply(_hyper_label, axis=1)
    rows = []
    for (opt, sp), g in d.groupby(["optimizer", "sparsity_pct"]):
        per_h = g.groupby("hyper").agg(test_acc=("test_acc", "mean"), trace=("hessian_trace", "mean"),
                                       trace_std=("hessian_trace", "std"), seeds=("seed", "nunique"))
        best = per_h["test_acc"].idxmax()
        b = per_h.loc[best]
        rows.append({"optimizer": opt, "sparsity_%": sp, "chosen": best or "-", "trace": b["trace"],
                     "trace_std": b["trace_std"], "test_acc": b["test_acc"], "seeds": int(b["seeds"])})
    long = pd.DataFrame(rows)
    long.to_csv(out / "table1_hessian_trace_long.csv", index=False)
    wide = long.pivot(index="sparsity_%", columns="optimizer", values="trace")
    order = [c for c in ("sgd", "sam", "nvrm") if c in wide] + [c for c in wide if c not in ("sgd", "sam", "nvrm")]
    wide = wide[order]
    wide.to_csv(out / "table1_hessian_trace.csv")
    md = ["# Table 1: trace of the Hessian of IMP tickets (mean over seeds; SAM ρ / NVRM b chosen by test accuracy)",
          "", markdown_table(wide, ".1f"), "", "Details (chosen hyperparameter, std over seeds, test accuracy):", "",
          markdown_table(long.set_index("optimizer"), ".4g")]
    (out / "table1_hessian_trace.md").write_text("\n".join(md) + "\n")
    return [out / "table1_hessian_trace.csv", out / "table1_hessian_trace.md"]


def figure1_label_noise(df: pd.DataFrame, out: Path) -> list[Path]:
    """Test accuracy of the sparsest ticket vs learning rate, clean vs noisy labels, with the dense baseline."""
    if df["label_noise"].nunique() < 2 or df["lr"].nunique() < 2:
        return []
    last = df["level"].max()
    sparse = df[df["level"] == last]
    dense = df[df["level"] == 0]
    fig, ax = plt.subplots(figsize=(6, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (noise, g) in enumerate(sparse.groupby("label_noise")):
        curve = g.groupby("lr")["test_acc"].agg(["mean", "std"])
        label = "clean" if noise == 0 else f"noisy ({100 * noise:.0f}% labels flipped)"
        ax.errorbar(curve.index, curve["mean"], yerr=curve["std"].fillna(0), marker="o", capsize=2,
                    color=colors[i], label=f"{label}, {100 * (1 - g['density'].mean()):.0f}% sparse")
        base = dense[dense["label_noise"] == noise].groupby("lr")["test_acc"].mean()
        ax.plot(base.index, base.values, linestyle="--", color=colors[i], alpha=0.7, label=f"{label}, unpruned")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("test accuracy")
    ax.set_title("IMP tickets under label noise (paper 000 Fig. 1)")
    ax.legend(fontsize=7)
    return [save(fig, out / "figure1_label_noise.png")]


def figure2_landscapes(df: pd.DataFrame, out: Path) -> list[Path]:
    """1-D training loss along the top eigenvector: small lr, large lr, small lr + SAM (paper 000 Fig. 2)."""
    if "landscape_losses" not in df or df["landscape_losses"].notna().sum() == 0:
        return []
    d = df[df["landscape_losses"].notna()]
    d = d[d["level"] == d["level"].max()]
    small, large = d["lr"].min(), d["lr"].max()
    panels = [("small lr (SGD)", d[(d["optimizer"] == "sgd") & (d["lr"] == small)]),
              ("large lr (SGD)", d[(d["optimizer"] == "sgd") & (d["lr"] == large)] if large != small else d.iloc[0:0]),
              ("small lr + SAM", d[(d["optimizer"] == "sam") & (d["lr"] == small)])]
    panels = [(t, g) for t, g in panels if len(g)]
    if not panels:
        return []
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), sharey=True, squeeze=False)
    rows = []
    for ax, (title, g) in zip(axes[0], panels):
        best = g.loc[g["test_acc"].idxmax()]  # the paper shows one ticket per setting
        alphas = np.asarray(json.loads(best["landscape_alphas"]))
        losses = np.asarray(json.loads(best["landscape_losses"]))
        ax.plot(alphas, losses)
        ax.set_title(f"{title}\ntest acc {best['test_acc']:.3f}, {100 * (1 - best['density']):.0f}% sparse", fontsize=9)
        ax.set_xlabel("perturbation along top eigenvector")
        rows += [{"setting": title, "alpha": a, "train_loss": loss} for a, loss in zip(alphas, losses)]
    axes[0, 0].set_ylabel("training loss")
    pd.DataFrame(rows).to_csv(out / "figure2_landscapes.csv", index=False)
    return [save(fig, out / "figure2_landscapes.png"), out / "figure2_landscapes.csv"]


def run_flatness_analyses(frames: list[pd.DataFrame], out: Path) -> list[Path]:
    df = pd.concat(frames, ignore_index=True)
    return table1(df, out) + figure1_label_noise(df, out) + figure2_landscapes(df, out)
