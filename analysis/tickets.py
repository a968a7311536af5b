"""Winning tickets, their controls and their instability, with confidence intervals over seeds.

* **Winning-ticket verdict** (paper 000 §3.3: a subnetwork is a winning ticket when its test accuracy is
  close to the whole network's): per configuration, the sparsest IMP level whose mean test-accuracy drop
  from the dense network (paired by seed) is at most the study's ``verdict.epsilon``, with the interval of
  that drop; there, whether the ticket beats its ``reinit`` and ``random_prune`` controls (Frankle & Carbin
  2019), each as a paired difference over seeds: ``better`` / ``worse`` when its interval excludes 0,
  ``not distinguishable`` otherwise.
* **Controls by level**: ticket, reinit and random_prune accuracy at every level that ran controls.
* **Instability** (Frankle et al. 2020): the error barrier between two copies trained from the same point,
  and along the line from the starting point to the ticket, by configuration and level.

Figures: ``tickets_vs_controls.png`` (test accuracy against density, mean and interval band per branch,
dense band, one panel per configuration) and ``instability.png`` (barrier against density by configuration).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from analysis.common import density_axis, markdown_table, save
from lth_tune.stats import Interval, compare, mean_ci, paired_difference, winning_level

__all__ = ["configurations", "control_table", "instability_table", "run_ticket_analyses", "verdict_table"]

TICKET = "ticket"
CONTROLS = ("reinit", "random_prune")


def configurations(study: dict, df: pd.DataFrame) -> tuple[list[str], pd.Series, pd.Series]:
    """(searched keys other than seed, a configuration label per row, the seed of each row)."""
    keys = [k for k in (study.get("grid") or {}) if k != "seed" and f"config/{k}" in df]
    if keys:
        label = df[[f"config/{k}" for k in keys]].astype(str).apply(
            lambda r: " ".join(f"{_short(k)}={v}" for k, v in zip(keys, r)), axis=1)
    else:
        label = pd.Series(["all"] * len(df), index=df.index)
    seed = df["config/seed"] if "config/seed" in df else df["trial_id"]
    return keys, label, seed


def _short(key: str) -> str:
    return {"train.lr": "lr", "regularizer.lam": "lam", "regularizer.kind": "reg", "train.optimizer": "opt",
            "data.label_noise": "noise", "train.rho": "rho", "train.nvrm_b": "b"}.get(key, key.split(".")[-1])


def _per_seed(df: pd.DataFrame, seed: pd.Series, column: str = "test_acc") -> dict[Any, float]:
    return {s: float(v) for s, v in zip(seed.loc[df.index], df[column]) if pd.notna(v)}


def _frames(study: dict, df: pd.DataFrame):
    df = df.copy()
    if "branch" not in df:
        df["branch"] = TICKET
    df["branch"] = df["branch"].fillna(TICKET)
    _, label, seed = configurations(study, df)
    df["_config"], df["_seed"] = label, seed
    return df


def verdict_table(study: dict, df: pd.DataFrame, *, epsilon: float, confidence: float) -> pd.DataFrame:
    """One row per configuration: dense accuracy, sparsest winning level, its drop, and the control verdicts."""
    df = _frames(study, df)
    rows = []
    for config, sub in df.groupby("_config", sort=True):
        tickets = sub[sub["branch"] == TICKET]
        dense_rows = tickets[tickets["level"] == 0]
        dense = _per_seed(dense_rows, dense_rows["_seed"])
        row: dict[str, Any] = {"configuration": config, "seeds": len(dense),
                               "dense_acc": mean_ci(list(dense.values()), confidence)}
        by_level = {int(level): _per_seed(lv, lv["_seed"]) for level, lv in tickets.groupby("level")}
        winning, drops = winning_level(dense, by_level, epsilon, confidence)
        deepest = int(tickets["level"].max()) if len(tickets) else 0
        row["sparsest_level"] = deepest
        row["sparsest_density"] = float(tickets.loc[tickets["level"] == deepest, "density"].mean())
        row["sparsest_drop"] = drops.get(deepest)
        row["winning_level"] = winning
        if winning is None:
            row.update(winning_density=np.nan, winning_drop=None)
        else:
            row["winning_density"] = float(tickets.loc[tickets["level"] == winning, "density"].mean())
            row["winning_drop"] = drops[winning]
        # controls at the sparsest winning level, else at the sparsest level that ran them
        ctl_levels = sorted(sub.loc[sub["branch"].isin(CONTROLS), "level"].unique())
        at = winning if winning in ctl_levels else (ctl_levels[-1] if ctl_levels else None)
        row["control_level"] = at
        for kind in CONTROLS:
            if at is None or not (sub["branch"] == kind).any():
                row[f"vs_{kind}"], row[f"diff_{kind}"] = "not run", None
                continue
            t = tickets[tickets["level"] == at]
            c = sub[(sub["branch"] == kind) & (sub["level"] == at)]
            diff = paired_difference(_per_seed(t, t["_seed"]), _per_seed(c, c["_seed"]), confidence)
            row[f"diff_{kind}"], row[f"vs_{kind}"] = diff, compare(diff)
        rows.append(row)
    return pd.DataFrame(rows)


def control_table(study: dict, df: pd.DataFrame, *, confidence: float) -> pd.DataFrame:
    """Ticket vs controls at every level that ran controls, per configuration."""
    df = _frames(study, df)
    rows = []
    for (config, level), sub in df[df["level"] > 0].groupby(["_config", "level"], sort=True):
        if not sub["branch"].isin(CONTROLS).any():
            continue
        t = sub[sub["branch"] == TICKET]
        ticket = _per_seed(t, t["_seed"])
        row = {"configuration": config, "level": int(level), "density": float(sub["density"].mean()),
               "ticket": mean_ci(list(ticket.values()), confidence)}
        for kind in CONTROLS:
            c = sub[sub["branch"] == kind]
            ctl = _per_seed(c, c["_seed"])
            row[kind] = mean_ci(list(ctl.values()), confidence)
            diff = paired_difference(ticket, ctl, confidence)
            row[f"vs_{kind}"] = compare(diff) if ctl else "not run"
        rows.append(row)
    return pd.DataFrame(rows)


def instability_table(study: dict, df: pd.DataFrame, *, confidence: float) -> pd.DataFrame:
    """Error barriers (between copies; from the starting point) per configuration and level."""
    if "instability_barrier" not in df or df["instability_barrier"].notna().sum() == 0:
        return pd.DataFrame()
    df = _frames(study, df)
    d = df[(df["branch"] == TICKET) & df["instability_barrier"].notna()]
    rows = []
    for (config, level), sub in d.groupby(["_config", "level"], sort=True):
        rows.append({"configuration": config, "level": int(level), "density": float(sub["density"].mean()),
                     "barrier": mean_ci(sub["instability_barrier"].tolist(), confidence),
                     "init_path_barrier": mean_ci(sub["init_path_barrier"].tolist(), confidence),
                     "dist_init": mean_ci(sub["dist_init"].tolist(), confidence)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- rendering


def _cell(v: Any) -> str:
    if isinstance(v, Interval):
        return v.text()
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def as_text_table(table: pd.DataFrame) -> pd.DataFrame:
    return table.map(_cell) if not table.empty else table


def verdict_sentence(row: pd.Series, epsilon: float) -> str:
    if row["winning_level"] is None or pd.isna(row["winning_level"]):
        return (f"{row['configuration']}: no level within ε={epsilon:g} of dense "
                f"(drop at density {row['sparsest_density']:.3f}: {_cell(row['sparsest_drop'])})")
    drop = row["winning_drop"]
    text = (f"{row['configuration']}: winning down to density {row['winning_density']:.3f} (level "
            f"{int(row['winning_level'])}, drop {_cell(drop)}")
    if isinstance(drop, Interval) and drop.n < 2:
        text += "; one seed, so no interval"
    elif isinstance(drop, Interval) and drop.high > epsilon:
        text += f"; by the mean only: the interval reaches {drop.high:.3f} > ε"
    text += ")"
    if row["control_level"] is not None and not pd.isna(row["control_level"]):
        parts = [f"{row[f'vs_{k}']} than {k}" if row[f"vs_{k}"] in ("better", "worse")
                 else f"{row[f'vs_{k}']} from {k}" if row[f"vs_{k}"] == "not distinguishable" else f"{k} {row[f'vs_{k}']}"
                 for k in CONTROLS]
        text += f"; at level {int(row['control_level'])}: " + ", ".join(parts)
    return text


def figure_tickets_vs_controls(study: dict, df: pd.DataFrame, out: Path, *, confidence: float) -> Path | None:
    df = _frames(study, df)
    configs = sorted(df["_config"].unique())
    if not configs or len(configs) > 24:
        return None
    cols = min(3, len(configs))
    rows = int(np.ceil(len(configs) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False, sharey=True)
    colors = {TICKET: "tab:blue", "reinit": "tab:red", "random_prune": "tab:green"}
    for ax, config in zip(axes.flat, configs):
        sub = df[df["_config"] == config]
        dense = sub[(sub["branch"] == TICKET) & (sub["level"] == 0)]
        d = mean_ci(dense["test_acc"].tolist(), confidence)
        if d.n:
            lo, hi = (d.low, d.high) if np.isfinite(d.low) else (d.mean, d.mean)
            ax.axhspan(lo, hi, color="0.85", zorder=0)
            ax.axhline(d.mean, color="0.4", linestyle="--", linewidth=1, label="dense")
        for branch, color in colors.items():
            b = sub[(sub["branch"] == branch) & (sub["level"] > 0)]
            if b.empty:
                continue
            stats = [(lv, float(g["density"].mean()), mean_ci(g["test_acc"].tolist(), confidence))
                     for lv, g in b.groupby("level")]
            x = np.array([s[1] for s in stats])
            m = np.array([s[2].mean for s in stats])
            lo = np.array([s[2].low if np.isfinite(s[2].low) else s[2].mean for s in stats])
            hi = np.array([s[2].high if np.isfinite(s[2].high) else s[2].mean for s in stats])
            style = "-" if branch == TICKET else ":"
            ax.plot(x, m, style, marker="o", markersize=3, color=color, label=branch)
            ax.fill_between(x, lo, hi, color=color, alpha=0.2)
        density_axis(ax)
        ax.set_title(config, fontsize=8)
        ax.set_xlabel("density", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(configs):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("test accuracy")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"IMP tickets vs controls: mean and {int(100 * confidence)}% interval over seeds", fontsize=10)
    return save(fig, out / "tickets_vs_controls.png")


_BARRIERS = (("barrier", "between two copies (SGD-noise instability)"),
             ("init_path_barrier", "from the starting point to the ticket"))


def _half_width(i) -> float:
    return i.half_width if np.isfinite(i.half_width) else 0.0


def figure_instability(table: pd.DataFrame, out: Path, *, confidence: float) -> Path | None:
    """Error barriers with their intervals over seeds: one row per configuration where the study measured one
    level, else one line per configuration against density (colour and line style together tell them apart)."""
    if table.empty:
        return None
    configs = sorted(table["configuration"].unique())
    if table["density"].nunique() == 1:
        fig, axes = plt.subplots(1, 2, figsize=(11, 1.4 + 0.3 * len(configs)), sharey=True)
        y = np.arange(len(configs))
        rows = table.set_index("configuration").loc[configs]
        for ax, (col, title) in zip(axes, _BARRIERS):
            ax.errorbar([i.mean for i in rows[col]], y, xerr=[_half_width(i) for i in rows[col]], fmt="o",
                        markersize=4, capsize=2)
            ax.set_yticks(y, configs, fontsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.set_xlabel(f"error barrier at density {table['density'].iloc[0]:.3g}")
            ax.set_title(title, fontsize=9)
            ax.axvline(0, color="0.5", linewidth=0.8)
            ax.grid(axis="y", color="0.92")
        axes[0].invert_yaxis()
    else:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for k, config in enumerate(configs):
            sub = table[table["configuration"] == config].sort_values("density")
            style = {"color": colors[k % len(colors)], "linestyle": ("-", "--", ":", "-.")[k // len(colors) % 4]}
            for ax, (col, _) in zip(axes, _BARRIERS):
                ax.errorbar(sub["density"], [i.mean for i in sub[col]], yerr=[_half_width(i) for i in sub[col]],
                            marker="o", markersize=3, capsize=2, label=config, **style)
        for ax, (_, title) in zip(axes, _BARRIERS):
            density_axis(ax)
            ax.set_xlabel("density")
            ax.set_ylabel("error barrier")
            ax.set_title(title, fontsize=9)
            ax.axhline(0, color="0.5", linewidth=0.8)
        axes[0].legend(fontsize=6)
    fig.suptitle(f"Linear mode connectivity (Frankle et al. 2020): mean and {int(100 * confidence)}% interval over seeds",
                 fontsize=10)
    return save(fig, out / "instability.png")


def run_ticket_analyses(study: dict, df: pd.DataFrame, out: str | Path) -> tuple[list[Path], dict[str, Any]]:
    """Write the verdict, control and instability tables (CSV + Markdown) and figures for an IMP experiment.

    Returns the paths and the tables (for the report)."""
    out = Path(out)
    if "level" not in df or "test_acc" not in df or "density" not in df:
        return [], {}
    verdict = study.get("study", {}).get("verdict", {})
    eps, conf = float(verdict.get("epsilon", 0.01)), float(verdict.get("confidence", 0.95))
    written: list[Path] = []
    tables = {"verdicts": verdict_table(study, df, epsilon=eps, confidence=conf),
              "controls": control_table(study, df, confidence=conf),
              "instability": instability_table(study, df, confidence=conf)}
    lines = [f"# Winning tickets (ε = {eps:g}, {int(100 * conf)}% intervals over seeds)", ""]
    for row in tables["verdicts"].itertuples(index=False):
        lines.append(f"- {verdict_sentence(pd.Series(row._asdict()), eps)}")
    for name, table in tables.items():
        if table.empty:
            continue
        text = as_text_table(table)
        text.to_csv(out / f"tickets_{name}.csv", index=False)
        written.append(out / f"tickets_{name}.csv")
        lines += ["", f"## {name}", "", markdown_table(text.set_index(text.columns[0]))]
    (out / "tickets.md").write_text("\n".join(lines) + "\n")
    written.append(out / "tickets.md")
    for fig in (figure_tickets_vs_controls(study, df, out, confidence=conf),
                figure_instability(tables["instability"], out, confidence=conf)):
        if fig is not None:
            written.append(fig)
    tables.update(epsilon=eps, confidence=conf)
    return written, tables
