"""The experiment's results table: one row per trial per level, written as results arrive.

``ResultsTable`` is a Tune callback on the driver. It rewrites ``results.csv`` atomically after every
reported step, keyed by (trial_id, level, branch) — branch ``ticket`` for IMP levels and PBP stages,
``reinit``/``random_prune`` for lottery-ticket controls — so a trial restored from a checkpoint never produces
duplicated rows, and it starts from the rows already on disk so a resumed experiment keeps everything
computed before the interruption.

With cloud storage (``--storage s3://…``) the tables are written locally under ``output.dir`` and mirrored
to the experiment's URI (``mirror``) with pyarrow: at most every ``upload_every_s`` seconds while results
arrive, and always when a trial ends and when the experiment ends. A driver on another machine resumes from
the mirrored copies (``download_missing``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

RESULTS_FILE = "results.csv"
TRIALS_FILE = "trials.csv"
#: The Optuna study of ``search.storage: sqlite`` (mirrored with the tables: the searcher writes it on this thread).
OPTUNA_DB = "optuna.db"
logger = logging.getLogger(__name__)
#: Tune's bookkeeping keys that are not worth a column (nor a TensorBoard curve).
TUNE_KEYS = _SKIP = {
    "done", "timesteps_total", "episodes_total", "training_iteration", "timestamp", "date", "hostname",
    "node_ip", "pid", "time_this_iter_s", "time_total_s", "time_since_restore", "iterations_since_restore",
    "checkpoint_dir_name", "should_checkpoint", "experiment_tag", "config", "checkpoint_score",
}


def result_row(trial_id: str, trial_name: str, config: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"trial_id": trial_id, "trial_name": trial_name}
    row.update({f"config/{k}": v for k, v in sorted(_flat(config).items())})
    row.update({k: v for k, v in result.items() if k not in _SKIP and not isinstance(v, dict)})
    return row


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "/"))
        else:
            out[key] = v
    return out


def write_csv_atomic(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


#: the branch of an IMP level or PBP stage (controls have their own)
TICKET = "ticket"
ROW_KEY = ["trial_id", "level", "branch"]


def with_branch(df: pd.DataFrame) -> pd.DataFrame:
    """Tables written before controls existed have no ``branch`` column: every row is a ticket row."""
    if "branch" not in df:
        df = df.assign(branch=TICKET)
    else:
        df = df.assign(branch=df["branch"].fillna(TICKET))
    return df


def order_rows(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return df
    df = with_branch(df).drop_duplicates(subset=ROW_KEY, keep="last").copy()  # one block, not many
    rank = (df["branch"] == TICKET).astype(int)  # a level's controls first, as they run
    return (df.assign(_rank=rank).sort_values(["trial_id", "level", "_rank", "branch"])
            .drop(columns="_rank").reset_index(drop=True))


class ResultsTable(tune.Callback):
    """Maintains ``<experiment>/results.csv`` and per-trial status in ``trials.csv`` while Tune runs."""

    def __init__(self, experiment_dir: str | Path, mirror: str | None = None, upload_every_s: float = 10.0):
        self.dir = Path(experiment_dir)
        self.mirror = mirror
        self.upload_every_s = upload_every_s
        self._load()

    def __getstate__(self):  # Tune pickles callbacks into tuner.pkl: never carry stale rows
        return {"dir": self.dir, "mirror": self.mirror, "upload_every_s": self.upload_every_s}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._load()

    def setup(self, **info):
        self._load()

    def _load(self) -> None:
        """Start from what is on disk, so a resumed experiment keeps its earlier rows."""
        self.rows: dict[tuple[str, int, str], dict[str, Any]] = {}
        self.status: dict[str, dict[str, Any]] = {}
        self._diverged: dict[str, str] = {}
        self._uploaded = -math.inf
        self._checked_restored = False
        path = self.dir / RESULTS_FILE
        if path.is_file():
            for row in with_branch(pd.read_csv(path)).to_dict("records"):
                self.rows[(row["trial_id"], int(row["level"]), row["branch"])] = row
        if (self.dir / TRIALS_FILE).is_file():
            for row in pd.read_csv(self.dir / TRIALS_FILE, keep_default_na=False).to_dict("records"):
                self.status[row["trial_id"]] = row

    def on_step_begin(self, iteration, trials, **info):
        """Once, on the first step: forget rows of trials that Tune does not know.

        After a driver crash Tune restores the trials of its last experiment checkpoint; a trial started
        after that checkpoint is asked for again under a new id, so rows written for the old id are dropped.
        """
        if self._checked_restored:
            return
        self._checked_restored = True
        known = {t.trial_id for t in trials}
        ghosts = ({key[0] for key in self.rows} | set(self.status)) - known
        if ghosts:
            self.rows = {k: v for k, v in self.rows.items() if k[0] not in ghosts}
            self.status = {k: v for k, v in self.status.items() if k not in ghosts}
            self.flush(force=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from lth_tune.tune.trainable import DIVERGED

        if result.get(DIVERGED):  # the trial's last word before it fails: the reason, not a level
            self._diverged[trial.trial_id] = f"DivergedError at level {int(result['level'])}: {result[DIVERGED]}"
            return
        row = result_row(trial.trial_id, str(trial), trial.config, result)
        row.setdefault("branch", TICKET)
        self.rows[(trial.trial_id, int(result["level"]), row["branch"])] = row
        done = sum(1 for key in self.rows if key[0] == trial.trial_id and key[2] == TICKET)
        self.status[trial.trial_id] = {"trial_id": trial.trial_id, "trial_name": str(trial),
                                       "status": "RUNNING", "levels": done, "error": ""}
        self.flush()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._set_status(trial, "TERMINATED", "")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._set_status(trial, "ERROR", self._diverged.pop(trial.trial_id, None) or _error_text(trial))

    def on_experiment_end(self, trials, **info):
        self.flush(force=True)

    def _set_status(self, trial, status: str, error: str) -> None:
        st = self.status.setdefault(trial.trial_id, {"trial_id": trial.trial_id, "trial_name": str(trial), "levels": 0})
        st.update(status=status, error=error)
        self.flush(force=True)

    def frame(self) -> pd.DataFrame:
        return order_rows(pd.DataFrame(list(self.rows.values())))

    def flush(self, force: bool = False) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.rows:
            write_csv_atomic(self.frame(), self.dir / RESULTS_FILE)
        if self.status:
            write_csv_atomic(pd.DataFrame(list(self.status.values())), self.dir / TRIALS_FILE)
        if self.mirror and (force or time.monotonic() - self._uploaded >= self.upload_every_s):
            try:
                upload_files(self.dir, self.mirror, [RESULTS_FILE, TRIALS_FILE, OPTUNA_DB])
                self._uploaded = time.monotonic()
            except OSError as err:  # a transient storage error must not end the study: retried next flush
                logger.warning("could not mirror the results tables to %s: %s", self.mirror, err)


def _fs_and_path(uri: str):
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(uri)
    return fs, path.rstrip("/")


def upload_files(local_dir: str | Path, uri: str, names: list[str]) -> None:
    """Copy ``local_dir/NAME`` to ``URI/NAME`` (pyarrow filesystem: s3://, gs://, file://, …) for existing files."""
    fs, root = _fs_and_path(uri)
    fs.create_dir(root, recursive=True)
    for name in names:
        src = Path(local_dir) / name
        if src.is_file():
            with fs.open_output_stream(f"{root}/{name}") as out:
                out.write(src.read_bytes())


def upload_tree(local_dir: str | Path, uri: str, *, replace: bool = False) -> None:
    """Copy every file under ``local_dir`` to the same relative path under ``URI``; ``replace`` empties ``URI``
    first, so files removed locally are removed there too."""
    import pyarrow.fs

    local_dir = Path(local_dir)
    fs, root = _fs_and_path(uri)
    if replace and fs.get_file_info(root).type == pyarrow.fs.FileType.Directory:
        fs.delete_dir_contents(root)
    fs.create_dir(root, recursive=True)
    for src in sorted(local_dir.rglob("*")):
        if src.is_file():
            dst = f"{root}/{src.relative_to(local_dir).as_posix()}"
            fs.create_dir(dst.rpartition("/")[0], recursive=True)
            with fs.open_output_stream(dst) as out:
                out.write(src.read_bytes())


def download_missing(uri: str, local_dir: str | Path, names: list[str]) -> list[str]:
    """Copy ``URI/NAME`` to ``local_dir/NAME`` where the local file is missing; returns the names copied."""
    import pyarrow.fs

    fs, root = _fs_and_path(uri)
    copied = []
    for name in names:
        dst = Path(local_dir) / name
        if dst.is_file() or fs.get_file_info(f"{root}/{name}").type != pyarrow.fs.FileType.File:
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(f"{root}/{name}") as src:
            data = src.read()
        tmp = dst.with_suffix(dst.suffix + f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, dst)
        copied.append(name)
    return copied


def _error_text(trial) -> str:
    """The last line of the trial's error (Tune stores the traceback in error.txt)."""
    path = getattr(trial, "error_file", None) or ""
    try:
        text = Path(path).read_text() if path and Path(path).is_file() else ""
    except OSError:
        text = ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "trial failed (see the trial's error.txt)"


def summary(df: pd.DataFrame, metric: str, mode: str, search_keys: list[str]) -> str:
    """Best configuration (study metric at each trial's last level, mean over seeds if ``seed`` was searched)
    and a table of test accuracy vs density per configuration."""
    if df.empty:
        return "no results"
    df = with_branch(df)
    df = df[df["branch"] == TICKET]
    keys = [k for k in search_keys if k != "seed" and f"config/{k}" in df]
    cols = [f"config/{k}" for k in keys]
    seeds = "seed" in search_keys
    table = df.copy()
    table["config"] = table[cols].astype(str).agg(", ".join, axis=1) if cols else table["trial_id"]
    lines = []
    last = table.sort_values("level").groupby("trial_id").tail(1)
    if metric in last and last[metric].notna().any():
        per_config = last.groupby("config")[metric].agg(["mean", "std", "count"]).dropna(subset=["mean"])
        best = per_config["mean"].idxmax() if mode == "max" else per_config["mean"].idxmin()
        b = per_config.loc[best]
        spread = f" ± {b['std']:.4f} over {int(b['count'])} seeds" if seeds and b["count"] > 1 else ""
        density = last.loc[last["config"] == best, "density"].mean()
        first = last[last["config"] == best].iloc[0]
        named = ", ".join(f"{k}={first[c]}" for k, c in zip(keys, cols)) if cols else f"trial {best}"
        lines.append(f"best configuration ({metric}={b['mean']:.4f}{spread} at density {density:.3f}): {named}")
    table["density"] = table["density"].round(3)
    pivot = table.pivot_table(index="config", columns="density", values="test_acc", aggfunc="mean")
    pivot = pivot[sorted(pivot.columns, reverse=True)]
    rows = ", ".join(keys) if keys else "trial"
    lines.append(f"test accuracy by density (columns) for each configuration (rows: {rows})"
                 + (", mean over seeds" if seeds else ""))
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format",
                           lambda v: "nan" if math.isnan(v) else f"{v:.3f}"):
        lines.append(pivot.to_string())
    return "\n".join(lines)
