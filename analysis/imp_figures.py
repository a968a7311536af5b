"""Paper 000 Figure 3 style: test accuracy vs the regulariser λ at several sparsities, one panel per lr."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.common import column_or_constant, density_axis, save
from lth_tune.stats import mean_ci


def pick_levels(df: pd.DataFrame, max_lines: int = 4) -> list[int]:
    """The dense level plus the levels nearest 80%, 90%, 95% sparsity that the run reached."""
    levels = sorted(df["level"].unique())
    dens = df.groupby("level")["density"].mean()
    chosen = [levels[0]]
    for target in (0.2, 0.1, 0.05):
        lvl = int((dens - target).abs().idxmin())
        if lvl not in chosen and dens[lvl] <= target * 1.5:
            chosen.append(lvl)
    return chosen[:max_lines]


def accuracy_vs_lambda(study: dict, df: pd.DataFrame, out: Path) -> Path | None:
    """Paper 000 Figure 3: test accuracy against λ at the dense level and three sparsities, one row of panels
    per learning rate and one column per regulariser kind (``l2_init``, ``l2_norm``: both panels when the
    kind is searched); mean over seeds with its 95% interval."""
    if "config/regularizer.lam" not in df:
        return None
    df = df.assign(lr=column_or_constant(df, study, "train.lr"), lam=df["config/regularizer.lam"],
                   kind=column_or_constant(df, study, "regularizer.kind"))
    lrs = sorted(df["lr"].unique(), reverse=True)
    kinds = sorted(k for k in df["kind"].unique() if k != "none") or ["none"]
    levels = pick_levels(df)
    fig, axes = plt.subplots(len(lrs), len(kinds), figsize=(5.6 * len(kinds), 3.2 * len(lrs)), squeeze=False,
                             sharey="row")
    nonzero = df.loc[df["lam"] > 0, "lam"]
    zero_at = nonzero.min() / 3 if len(nonzero) else 1e-6
    for i, lr in enumerate(lrs):
        for j, kind in enumerate(kinds):
            ax = axes[i, j]
            # λ = 0 is the same network for every kind: its runs count in each panel
            sub = df[(df["lr"] == lr) & ((df["kind"] == kind) | (df["lam"] == 0))]
            for lvl in levels:
                at = sub[sub["level"] == lvl]
                lams = sorted(at["lam"].unique())
                cis = [mean_ci(at.loc[at["lam"] == lam, "test_acc"].tolist()) for lam in lams]
                x = [lam if lam > 0 else zero_at for lam in lams]
                y = [c.mean for c in cis]
                err = [c.half_width if np.isfinite(c.half_width) else 0.0 for c in cis]
                d = at["density"].mean()
                label = "unpruned" if lvl == 0 else f"{100 * (1 - d):.0f}% sparse"
                ax.errorbar(x, y, yerr=err, marker="o", capsize=2, label=label, linestyle="--" if lvl == 0 else "-")
            ax.set_xscale("log")
            ax.set_title(f"{kind}, lr = {lr}", fontsize=9)
            ax.set_xlabel(f"λ (λ=0 drawn at {zero_at:.1e})")
            ax.set_ylabel("test accuracy")
            ax.legend(fontsize=7)
    name = "_".join(kinds)
    return save(fig, out / f"accuracy_vs_lambda_{name}.png")


def accuracy_vs_density(study: dict, df: pd.DataFrame, out: Path, search_keys: list[str]) -> Path:
    """Test accuracy vs density (log x) for every configuration (averaged over seeds if seed was searched)."""
    keys = [k for k in search_keys if k != "seed"]
    label_cols = [f"config/{k}" for k in keys]
    groups = list(df.groupby(label_cols)) if label_cols else [((), df)]
    many = len(groups) > 10  # more curves than the default colour cycle: a legend beside the axes, 20 colours
    fig, ax = plt.subplots(figsize=(10, 4.5) if many else (6.5, 4))
    colours = plt.cm.tab20.colors if many else [None] * len(groups)
    for (name, sub), colour in zip(groups, colours):
        curve = sub.groupby("level").agg(density=("density", "mean"), acc=("test_acc", "mean"))
        name = name if isinstance(name, tuple) else (name,)
        ax.plot(curve["density"], curve["acc"], marker=".", color=colour,
                label=", ".join(f"{k}={v}" for k, v in zip(keys, name)))
    density_axis(ax)
    ax.set_xlabel("density (fraction of weights remaining)")
    ax.set_ylabel("test accuracy")
    if len(ax.lines) <= 20:
        ax.legend(fontsize=7, **({"loc": "upper left", "bbox_to_anchor": (1.01, 1)} if many else {}))
    return save(fig, out / "accuracy_vs_density.png")
