"""Shared helpers: load an experiment, pick columns, save figures."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd


def load_experiment(exp_dir: str | Path) -> tuple[dict, pd.DataFrame]:
    exp_dir = Path(exp_dir)
    study_path, results_path = exp_dir / "study.json", exp_dir / "results.csv"
    if not study_path.is_file():
        raise FileNotFoundError(f"{exp_dir}: not an lth-tune experiment (no study.json)")
    if not results_path.is_file():
        raise FileNotFoundError(f"{exp_dir}: no results.csv yet")
    # .copy() consolidates the column blocks read_csv makes (one per column here): later assigns stay fast
    return json.loads(study_path.read_text()), pd.read_csv(results_path).copy()


def tickets_only(df: pd.DataFrame) -> pd.DataFrame:
    """The IMP levels / PBP stages of a results table, without lottery-ticket control rows."""
    if "branch" not in df:
        return df
    return df[df["branch"].fillna("ticket") == "ticket"]


def config_col(key: str) -> str:
    return f"config/{key}"


def experiment_value(study: dict, key: str):
    cur = study["study"]["experiment"]
    for part in key.split("."):
        cur = cur[part]
    return cur


def column_or_constant(df: pd.DataFrame, study: dict, key: str) -> pd.Series:
    """The searched column for ``key`` if it was searched, else the study's constant value."""
    col = config_col(key)
    if col in df:
        return df[col]
    return pd.Series([experiment_value(study, key)] * len(df), index=df.index)


def density_axis(ax) -> None:
    """A density x axis as the lottery-ticket literature draws it: log scale, dense on the left, plain labels
    (1, 0.5, 0.2, 0.1, …) at the major ticks only, so small panels do not overprint minor-tick labels."""
    from matplotlib.ticker import FixedLocator, NullFormatter, StrMethodFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator([1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001]))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if not ax.xaxis_inverted():
        ax.invert_xaxis()


def save(fig, path: Path) -> Path:
    """Lay out (leaving room for a suptitle, which ``tight_layout`` ignores) and write a PNG at 120 dpi."""
    path.parent.mkdir(parents=True, exist_ok=True)
    title_in = 0.3 if fig._suptitle is not None else 0.0  # inches kept free at the top for the suptitle
    fig.tight_layout(rect=(0, 0, 1, 1 - title_in / fig.get_figheight()))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join([df.index.name or ""] + cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for idx, row in df.iterrows():
        cells = [format(v, floatfmt) if isinstance(v, float) else str(v) for v in row.values]
        lines.append("| " + " | ".join([str(idx)] + cells) + " |")
    return "\n".join(lines)
