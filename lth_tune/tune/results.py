"""The experiment's results table: one row per trial per level, written as results arrive.

``ResultsTable`` is a Tune callback on the driver. It rewrites ``results.csv`` atomically after every
reported step (from rows formatted once as they arrive, :class:`CsvRows`: about a millisecond at 800 rows),
keyed by (trial_id, level, branch) — branch ``ticket`` for IMP levels and PBP stages,
``reinit``/``random_prune`` for lottery-ticket controls — so a trial restored from a checkpoint never produces
duplicated rows, and it starts from the rows already on disk so a resumed experiment keeps everything
computed before the interruption.

With cloud storage (``--storage s3://…``) the tables are written locally under ``output.dir`` and mirrored
to the experiment's URI (``mirror``) with pyarrow: at most every ``upload_every_s`` seconds while results
arrive, and always when a trial ends and when the experiment ends. A driver on another machine resumes from
the mirrored copies (``download_missing``).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import numbers
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
    row.update({k: v for k, v in result.items() if k not in _SKIP and not isinstance(v, (dict, list))})
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
    write_text_atomic(df.to_csv(index=False), path)


#: the branch of an IMP level or PBP stage (controls have their own)
TICKET = "ticket"
ROW_KEY = ["trial_id", "level", "branch"]


def _cell(value: Any) -> str:
    """One CSV field as ``DataFrame.to_csv`` writes it (None and NaN empty; floats by ``repr``; numpy scalars as
    the Python numbers they hold), so ``pd.read_csv`` reads back the same values."""
    if value is None:
        return ""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return "" if math.isnan(value) else repr(float(value))
    return str(value)


class CsvRows:
    """``results.csv`` written from rows each formatted once: a rewrite costs a sort and a join, not a DataFrame
    (≈1 ms instead of ≈20 ms at 800 rows, and it happens before every experiment-state save). Columns are the
    rows' keys in order of first arrival; a row formatted before a column existed gets empty fields for it. Rows
    are ordered as :func:`order_rows` orders them."""

    def __init__(self):
        self.columns: list[str] = []
        self._index: dict[str, int] = {}
        self._lines: dict[tuple, tuple[int, str]] = {}  # row key -> (columns when formatted, formatted fields)

    def put(self, key: tuple, row: dict[str, Any]) -> None:
        for name in row:
            if name not in self._index:
                self._index[name] = len(self.columns)
                self.columns.append(name)
        fields = [""] * len(self.columns)
        for name, value in row.items():
            fields[self._index[name]] = _cell(value)
        self._lines[key] = (len(self.columns), _join(fields))

    def drop(self, keys) -> None:
        for key in keys:
            self._lines.pop(key, None)

    def text(self) -> str:
        n = len(self.columns)
        order = sorted(self._lines, key=lambda k: (str(k[0]), k[1], k[2] == TICKET, k[2]))
        lines = [_join(self.columns)]
        for key in order:
            width, line = self._lines[key]
            lines.append(line + "," * (n - width))
        return "\n".join(lines) + "\n"


def _join(fields: list[str]) -> str:
    if not any(c in f for f in fields for c in ',"\n\r'):
        return ",".join(fields)
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue()


def write_text_atomic(text: str, path: Path) -> None:
    """Write ``path`` whole or not at all (a reader never sees half a file): a temporary file, then a rename."""
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


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

    def __init__(self, experiment_dir: str | Path, mirror: str | None = None, upload_every_s: float = 10.0,
                 fast: bool = True):
        self.dir = Path(experiment_dir)
        self.mirror = mirror
        self.upload_every_s = upload_every_s
        self.fast = fast  # CsvRows (each row formatted once) instead of a DataFrame per rewrite
        self._load()

    def __getstate__(self):  # Tune pickles callbacks into tuner.pkl: never carry stale rows
        return {"dir": self.dir, "mirror": self.mirror, "upload_every_s": self.upload_every_s, "fast": self.fast}

    def __setstate__(self, state):
        self.__dict__.update({"fast": True, **state})
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
        self._csv = CsvRows()
        for key, row in self.rows.items():
            self._csv.put(key, row)
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
            self._csv.drop([k for k in self.rows if k[0] in ghosts])
            self.rows = {k: v for k, v in self.rows.items() if k[0] not in ghosts}
            self.status = {k: v for k, v in self.status.items() if k not in ghosts}
            self.flush(force=True)
        if known or ghosts:  # a resumed experiment: list what lost or restarted trials finished, for adoption
            self._list_adoptable({t.trial_id for t in trials if t.status == "TERMINATED" or t.checkpoint is not None})

    def _list_adoptable(self, skip: set[str]) -> None:
        """``adoptable.json``: the newest checkpoint, by identity, of every trial directory but those of ``skip``
        (finished trials, and trials Tune resumes from a checkpoint of its own): trials Tune does not know and trials
        it restarts from scratch (:mod:`lth_tune.tune.adoption`); the trials that run their grid points continue
        from there."""
        from lth_tune.runs import RUNS
        from lth_tune.tune.adoption import lost_checkpoints, write_adoptable

        location = self.mirror or self.dir
        try:
            write_adoptable(location, lost_checkpoints(location, skip, sorted({c.CHECKPOINT_FILE for c in RUNS.values()})))
        except OSError as err:  # storage trouble: the lost trials are recomputed, as before adoption existed
            logger.warning("could not list the checkpoints of lost trials under %s: %s", location, err)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from lth_tune.tune.trainable import DIVERGED, steps_of

        if result.get(DIVERGED):  # the trial's last word before it fails: the reason, not a level
            self._diverged[trial.trial_id] = f"DivergedError at level {int(result['level'])}: {result[DIVERGED]}"
            return
        for step in steps_of(result):
            row = result_row(trial.trial_id, str(trial), trial.config, step)
            row.setdefault("branch", TICKET)
            key = (trial.trial_id, int(step["level"]), row["branch"])
            self.rows[key] = row
            self._csv.put(key, row)
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
        """Write the tables; mirror them (at most every ``upload_every_s`` seconds unless ``force``)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.rows and self.fast:
            write_text_atomic(self._csv.text(), self.dir / RESULTS_FILE)
        elif self.rows:
            write_csv_atomic(self.frame(), self.dir / RESULTS_FILE)
        else:  # every row belonged to trials Tune no longer knows
            (self.dir / RESULTS_FILE).unlink(missing_ok=True)
        if self.status and self.fast:
            statuses = CsvRows()
            for i, row in enumerate(self.status.values()):
                statuses.put(("", i, ""), row)  # in the order trials first reported
            write_text_atomic(statuses.text(), self.dir / TRIALS_FILE)
        elif self.status:
            write_csv_atomic(pd.DataFrame(list(self.status.values())), self.dir / TRIALS_FILE)
        else:
            (self.dir / TRIALS_FILE).unlink(missing_ok=True)
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
