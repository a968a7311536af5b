"""TensorBoard that compares runs: ``<experiment>/tensorboard/``, written by the driver with TensorBoard's writer.

One TensorBoard run per trial, named by its searched values (``lr=0.1 lam=1e-4 seed=2``), and, when seeds are
searched, one per configuration with the mean over seeds (``lr=0.1 lam=1e-4 mean``). Step = IMP level (PBP: stage − 1).
Tags are grouped by meaning — ``accuracy/test``, ``loss/train``, ``ticket/density``, ``ticket/dist_init``,
``flatness/…``, ``bound/…``, ``instability/…``; a lottery-ticket control's metrics sit under its branch
(``reinit/accuracy/test``) — and Tune's bookkeeping is not written. The first run also holds a custom-scalars layout
(one chart per metric with every configuration in it) and the HParams experiment: the searched keys as columns,
as metrics the sparsest level's values (the last value of ``accuracy/test``, ``ticket/density``, …) and the
winning-ticket verdict (``verdict/…``: the sparsest level whose mean test-accuracy drop from dense is ≤ the study's
``verdict.epsilon``, :func:`lth_tune.stats.winning_level`).

``TensorBoardCallback`` writes each trial's points as results arrive (each (run, level, branch) once: points of a
restored trial that repeats a level, or of rows already in ``results.csv`` when a driver resumes, are skipped),
then, when the experiment ends, rewrites the whole directory from ``results.csv`` — per-trial runs with their
HParams sessions, the mean runs, the layout — so the final files hold every point exactly once whatever happened
on the way (crashes, resumes, trials asked again). :func:`write_tensorboard` is that rewrite, usable on its own.
"""

from __future__ import annotations

import logging
import math
import numbers
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from ray import tune

from lth_tune.stats import winning_level

logger = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
TICKET = "ticket"
EVENTS = "events.out.tfevents"

# --------------------------------------------------------------------------- tags

#: reported key → tag, for the keys every runner reports
_TAGS = {
    "test_acc": "accuracy/test", "val_acc": "accuracy/val", "train_acc": "accuracy/train",
    "test_loss": "loss/test", "val_loss": "loss/val", "train_loss": "loss/train",
    "density": "ticket/density", "dist_init": "ticket/dist_init", "weight_norm": "ticket/weight_norm",
    "test_acc_gap": "ticket/test_acc_drop", "val_acc_gap": "ticket/val_acc_drop",
    "instability_barrier": "instability/barrier", "instability_distance": "instability/distance",
    "init_path_barrier": "instability/init_path_barrier",
    "time_s": "time/step_s",
    # PBP / PFT (paper 004)
    "bound": "bound/theorem1", "bound_kl": "bound/kl_inverse", "kl": "bound/kl", "kl_normalized": "bound/kl_per_n",
    "cert_emp_risk_mc": "bound/emp_risk_mc", "cert_risk_upper": "bound/risk_upper", "cert_epsilon": "bound/kl_term",
    "objective": "pbp/objective", "expected_density": "pbp/expected_density", "entropy": "pbp/mask_entropy",
    "mask_overlap": "pbp/mask_overlap",
}
#: not curves: positions, constants of a run, bookkeeping
_SKIP = {"level", "stage", "sparsity", "target_sparsity", "n_prior", "n_bound", "checkpoint_score", "diverged",
         "bound_num_prior_sigmas"}
_CONSTANT_SUFFIXES = ("_m", "_n", "_delta", "_delta_prime", "_delta_eff", "_delta_prime_eff", "_confidence",
                      "_grid_size", "_prior_index", "_per_weight", "_seconds", "_time_s", "_probes", "_sigma")
_SPLIT_METRIC = re.compile(r"^(train|val|test)_(acc|loss)_(\w+)$")  # PFT: test_acc_pft, test_acc_baseline


def tag_of(key: str, branch: str = TICKET) -> str | None:
    """The TensorBoard tag of a reported metric (None: not plotted); a control's tags sit under its branch."""
    if key in _TAGS:
        tag = _TAGS[key]
    elif key in _SKIP or key.startswith("cert_") or key.endswith(_CONSTANT_SUFFIXES):
        return None
    elif m := _SPLIT_METRIC.match(key):
        tag = f"{'accuracy' if m.group(2) == 'acc' else 'loss'}/{m.group(1)}_{m.group(3)}"
    elif key.startswith(("hessian_", "landscape_", "expected_sharpness")):
        tag = f"flatness/{key.removeprefix('expected_')}"
    elif key.startswith(("ss_", "gauss_", "bound_")):
        tag = f"bound/{key}"
    elif key.startswith(("instability_", "init_path_")):
        tag = f"instability/{key.removeprefix('instability_')}"
    elif key.endswith("_err") or "_err_" in key:
        tag = f"error/{key}"
    elif key.startswith("density_"):
        tag = f"ticket/{key}"
    else:
        tag = f"other/{key}"
    if branch != TICKET:
        tag = f"{branch}/{tag.removeprefix('ticket/')}"
    return tag


def scalars(metrics: dict[str, Any], branch: str = TICKET) -> dict[str, float]:
    """{tag: value} of the finite numeric metrics of one report (a Tune result or a ``results.csv`` row): Tune's
    bookkeeping (``training_iteration``, ``time_total_s``, …) and the config columns are not metrics."""
    from lth_tune.tune.results import TUNE_KEYS

    out = {}
    for key, value in metrics.items():
        if key in TUNE_KEYS or key.startswith("config/") or isinstance(value, bool):
            continue
        if not isinstance(value, numbers.Real) or not math.isfinite(value):
            continue
        tag = tag_of(key, branch)
        if tag is not None:
            out[tag] = float(value)
    return out


# --------------------------------------------------------------------------- run names

def format_value(value: Any) -> str:
    """``1e-4``, ``0.1``, ``0``, ``3``, ``mlp``: short and exact enough to tell grid values apart."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e6:
        return str(int(value))
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e5):
            mantissa, exponent = f"{value:.6e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"{value:.6g}"
    return str(value).replace("/", "_").replace("\\", "_")


class RunNames:
    """Names of the TensorBoard runs of a study: ``lr=0.1 lam=1e-4 seed=2`` from the searched keys that take more
    than one value (in the study's order, seed last), with grid indices of non-scalar values decoded."""

    def __init__(self, grid: dict[str, list], encoded: dict[str, list] | None = None):
        self.grid = grid
        self.encoded = encoded or {}
        varied = [k for k, values in grid.items() if len(values) > 1]
        self.keys = [k for k in varied if k != "seed"] + (["seed"] if "seed" in varied else [])
        last = [k.rsplit(".", 1)[-1] for k in self.keys]
        self.short = {k: (s if last.count(s) == 1 else k) for k, s in zip(self.keys, last)}
        self.seeds = "seed" in self.keys

    def value(self, key: str, raw: Any) -> Any:
        if key in self.encoded and raw is not None and not (isinstance(raw, float) and math.isnan(raw)):
            return self.encoded[key][int(raw)]
        return raw

    def params(self, config: dict[str, Any]) -> dict[str, Any]:
        """{key: value} of the named keys from a trial config (``{"train.lr": 0.1, …}``)."""
        return {k: self.value(k, config.get(k)) for k in self.keys}

    def run(self, params: dict[str, Any], trial_id: str = "") -> str:
        if not self.keys:
            return f"trial {trial_id}" if trial_id else "run"
        return " ".join(f"{self.short[k]}={format_value(params[k])}" for k in self.keys)

    def trial(self, config: dict[str, Any]) -> str:
        """The run of a trial config (``trial.config``, or the ``config/…`` columns of ``results.csv``)."""
        return self.run(self.params(config))

    def configuration(self, params: dict[str, Any]) -> str:
        """The run of the mean over seeds of ``params``' configuration: ``lr=0.1 lam=1e-4 mean``."""
        rest = " ".join(f"{self.short[k]}={format_value(params[k])}" for k in self.keys if k != "seed")
        return f"{rest} mean".strip()


# --------------------------------------------------------------------------- writing

def _writer(log_dir: Path):
    from torch.utils.tensorboard import SummaryWriter

    # a queue of 1000 events: a result's ≈20 scalars are queued at once (with the default 10 the driver waits,
    # result after result, for the writer thread to get the GIL); written every 10 s and on close as before
    return SummaryWriter(log_dir=str(log_dir), flush_secs=10, max_queue=1000)


def _add_summary(writer, summary_pb) -> None:
    """A summary proto (HParams) through the writer's event file, as ``SummaryWriter.add_hparams`` does."""
    writer._get_file_writer().add_summary(summary_pb)


def _purge(tb_dir: Path, keep: set[str] = frozenset()) -> None:
    """Remove the runs this module writes (event files and run directories) but those named in ``keep``, nothing
    else."""
    if not tb_dir.is_dir():
        return
    for path in tb_dir.iterdir():
        if path.name in keep:
            continue
        if path.is_dir() and any(p.name.startswith(EVENTS) for p in path.rglob(f"{EVENTS}*")):
            shutil.rmtree(path)
        elif path.is_file() and path.name.startswith(EVENTS):
            path.unlink()


def _frame(df: pd.DataFrame, names: RunNames) -> pd.DataFrame:
    df = df.copy()
    df["branch"] = df["branch"].fillna(TICKET) if "branch" in df else TICKET
    if "diverged" in df:
        df = df[df["diverged"].isna()]
    params = [names.params({k: row.get(f"config/{k}") for k in names.keys}) for row in df.to_dict("records")]
    df["_run"] = [names.run(p, t) for p, t in zip(params, df["trial_id"])]
    df["_config"] = [names.configuration(p) for p in params]
    df["_params"] = params
    return df.drop_duplicates(["trial_id", "level", "branch"], keep="last")


def _verdict(rows: pd.DataFrame, epsilon: float, confidence: float) -> dict[str, float]:
    """The HParams metrics of a session beyond the last curve values: the winning-ticket verdict of its trials
    (one seed each; paired by trial), and the mean test-accuracy drop from dense at the sparsest level."""
    t = rows[rows["branch"] == TICKET]
    if t.empty or "test_acc" not in t:
        return {}
    acc = {int(level): {trial: float(v) for trial, v in zip(g["trial_id"], g["test_acc"]) if pd.notna(v)}
           for level, g in t.groupby("level")}
    if 0 not in acc:
        return {}
    winning, drops = winning_level(acc[0], acc, epsilon, confidence)
    deepest = max(acc)
    density = t.groupby("level")["density"].mean() if "density" in t else pd.Series(dtype=float)
    level = winning if winning is not None else 0
    out = {"verdict/winning_ticket": 1.0 if winning is not None else 0.0,
           "verdict/winning_level": float(level),
           "verdict/winning_density": float(density.get(level, math.nan)),
           "verdict/test_acc_drop": drops[deepest].mean}
    return {k: v for k, v in out.items() if math.isfinite(v)}


#: HParams metric columns: (tag, display name, description)
HPARAM_METRICS = [  # TensorBoard shows the first five at first
    ("accuracy/test", "test acc (sparsest)", "test accuracy at the sparsest level reached"),
    ("ticket/density", "density (sparsest)", "fraction of weights kept at the sparsest level"),
    ("verdict/test_acc_drop", "test acc drop (sparsest)", "mean test-accuracy drop from dense at the sparsest level"),
    ("verdict/winning_density", "winning density", "density of the sparsest level within ε of dense (1 = dense only)"),
    ("verdict/winning_ticket", "winning ticket", "1 when a pruned level is within ε of dense (paper 000 §3.3)"),
    ("accuracy/val", "val acc (sparsest)", "validation accuracy at the sparsest level reached"),
    ("verdict/winning_level", "winning level", "the sparsest IMP level within ε of dense (0 = none pruned)"),
]


def write_tensorboard(tb_dir: str | Path, results: pd.DataFrame, *, grid: dict[str, list],
                      encoded: dict[str, list] | None = None, epsilon: float = 0.01, confidence: float = 0.95,
                      metric: str | None = None, written_live: set[tuple[str, int, str]] | None = None) -> list[str]:
    """(Re)write ``tb_dir`` from a results table (``results.csv``): per-trial runs, mean-over-seeds runs, the
    custom-scalars layout and the HParams experiment. Returns the run names written.

    ``written_live``: the (run, level, branch) points a sweep's callback wrote as results arrived, each once. A
    trial's run whose points are exactly the table's (one trial, nothing more, nothing less) keeps its curves; it
    only gets its HParams session and verdict, in a second event file (TensorBoard reads every event file of a
    run). Every other run is rewritten."""
    from tensorboard.plugins.hparams import summary_v2 as hp

    tb_dir = Path(tb_dir)
    names = RunNames(grid, encoded)
    df = _frame(results, names) if not results.empty else None
    keep = _complete_runs(df, written_live) if df is not None and written_live else set()
    _purge(tb_dir, keep)
    tb_dir.mkdir(parents=True, exist_ok=True)
    if df is None:
        return []
    written, tags = [], set()

    def write_run(run: str, curves: pd.DataFrame, trials: pd.DataFrame, seed: str | None) -> None:
        """``curves``: one row per (level, branch); ``trials``: the rows of its trials, for the verdict."""
        params = trials["_params"].iloc[0]
        values = {k: _hparam_value(v) for k, v in params.items() if k != "seed"}
        if names.seeds:
            values["seed"] = seed
        with _writer(tb_dir / run) as w:
            if run in keep:  # its curves are on disk: only their tags are needed, for the layout
                tags.update(_tags(curves))
            else:
                for r in curves.sort_values(["level", "branch"]).to_dict("records"):
                    for tag, value in scalars(r, r["branch"]).items():
                        w.add_scalar(tag, value, int(r["level"]))
                        tags.add(tag)
            _add_summary(w, hp.hparams_pb(values, trial_id=run, start_time_secs=time.time()))
            deepest = int(trials["level"].max())
            for tag, value in _verdict(trials, epsilon, confidence).items():
                w.add_scalar(tag, value, deepest)
                tags.add(tag)
        written.append(run)

    for run, rows in df.groupby("_run", sort=True):
        curves = rows.drop_duplicates(["level", "branch"], keep="last")
        write_run(run, curves, rows, format_value(rows["_params"].iloc[0].get("seed")))
    if names.seeds:
        numeric = [c for c in df.columns if not c.startswith(("config/", "_")) and c != "level"
                   and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
        for run, rows in df.groupby("_config", sort=True):
            write_run(run, rows.groupby(["branch", "level"], as_index=False)[numeric].mean(), rows, "mean")
    # the study's own summaries ride in the first run (a run of their own would show up as an empty "." run)
    with _writer(tb_dir / written[0]) as w:
        w.add_custom_scalars(layout(tags))
        _add_summary(w, hparams_config(hp, names, df, tags, metric))
    return written


def _tags(rows: pd.DataFrame) -> set[str]:
    """The tags :func:`scalars` gives the rows of ``rows``, without going row by row: per branch, the numeric
    columns holding a finite value, named by :func:`scalars`' own rules."""
    out = set()
    for branch, g in rows.groupby("branch", sort=False):
        numeric = g.select_dtypes("number")  # not bool: scalars skips booleans too
        finite = np.isfinite(numeric.to_numpy(dtype=float, na_value=np.nan)).any(axis=0)
        out.update(scalars(dict.fromkeys(numeric.columns[finite], 0.0), branch))
    return out


def _complete_runs(df: pd.DataFrame, written_live: set[tuple[str, int, str]]) -> set[str]:
    """Runs of one trial whose points in ``df`` are exactly the ``written_live`` points of that run."""
    live: dict[str, set[tuple[int, str]]] = {}
    for run, level, branch in written_live:
        live.setdefault(run, set()).add((int(level), branch))
    out = set()
    for run, rows in df.groupby("_run", sort=False):
        points = set(zip(rows["level"].astype(int), rows["branch"]))
        if rows["trial_id"].nunique() == 1 and live.get(run) == points:  # _frame left one row per point
            out.add(run)
    return out


def _hparam_value(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars from pandas
        value = value.item()
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def hparams_config(hp, names: RunNames, df: pd.DataFrame, tags: set[str], metric: str | None):
    """The HParams experiment: searched keys with their grid as discrete domains (seed: the seeds and ``mean``),
    and the metric columns."""
    hparams = []
    for key in names.keys:
        if key == "seed":
            seeds = sorted({format_value(p.get("seed")) for p in df["_params"]}, key=_natural)
            hparams.append(hp.HParam("seed", hp.Discrete([*seeds, "mean"])))
            continue
        grid = [_hparam_value(names.value(key, i) if key in names.encoded else v)
                for i, v in enumerate(names.grid[key])]
        kinds = {str if isinstance(v, str) else bool if isinstance(v, bool) else float for v in grid}
        hparams.append(hp.HParam(key, hp.Discrete(grid)) if len(kinds) == 1 else hp.HParam(key))
    metrics = [(t, n, d) for t, n, d in HPARAM_METRICS if t in tags]
    study_tag = tag_of(metric) if metric else None
    if study_tag and study_tag in tags and study_tag not in [t for t, _, _ in metrics]:
        metrics.insert(0, (study_tag, f"{metric} (last)", f"the study metric {metric} at the last level"))
    return hp.hparams_config_pb(hparams=hparams, metrics=[hp.Metric(t, display_name=n, description=d)
                                                          for t, n, d in metrics])


def _natural(text: str):
    return (0, float(text), text) if re.fullmatch(r"-?\d+(\.\d+)?", text) else (1, 0.0, text)


#: custom-scalars charts: (category, title, tag regex)
_CHARTS = [
    ("accuracy", "test accuracy", r"^accuracy/test$"),
    ("accuracy", "validation accuracy", r"^accuracy/val$"),
    ("accuracy", "train loss", r"^loss/train$"),
    ("ticket", "density", r"^ticket/density$"),
    ("ticket", "‖m⊙(θ−θ_init)‖₂", r"^ticket/dist_init$"),
    ("ticket", "test-accuracy drop from dense", r"^ticket/test_acc_drop$"),
    ("ticket vs controls", "test accuracy: ticket, reinit, random_prune", r"^(reinit/|random_prune/)?accuracy/test$"),
]


def layout(tags: set[str]) -> dict:
    """One chart per metric, every run (configuration) in it; flatness/bound/instability tags get one each."""
    out: dict[str, dict[str, list]] = {}
    for category, title, regex in _CHARTS:
        if any(re.match(regex, t) for t in tags):
            out.setdefault(category, {})[title] = ["Multiline", [regex]]
    for group in ("flatness", "bound", "instability", "pbp", "error"):
        for tag in sorted(t for t in tags if t.startswith(f"{group}/")):
            out.setdefault(group, {})[tag.split("/", 1)[1]] = ["Multiline", [f"^{re.escape(tag)}$"]]
    return out


# --------------------------------------------------------------------------- the driver callback

class TensorBoardCallback(tune.Callback):
    """Driver-side Tune callback writing ``<experiment>/tensorboard`` (see the module docstring).

    ``mirror``: where to copy the directory (``--storage s3://…``: ``<experiment URI>/tensorboard``); it is copied at most every
    ``upload_every_s`` seconds while results arrive, and when a trial or the experiment ends.

    ``finish_in_background``: the final rewrite runs in a thread started by ``on_experiment_end``, so the sweep
    shuts its Ray cluster down meanwhile; :meth:`wait` joins it (before the sweep's summary). Off for a callback
    Tune unpickles (a resumed sweep), whose caller cannot reach it to wait. On a sweep that started the experiment,
    the trials' runs keep the curves written as results arrived, and the rewrite adds their HParams sessions, the
    mean runs and the layout (:func:`write_tensorboard`'s ``written_live``): ≈0.7 s instead of ≈1.3 s for the main
    job.
    """

    def __init__(self, experiment_dir: str | Path, *, grid: dict[str, list], encoded: dict[str, list] | None = None,
                 epsilon: float = 0.01, confidence: float = 0.95, metric: str | None = None,
                 mirror: str | None = None, upload_every_s: float = 30.0, flush_each: bool = False,
                 finish_in_background: bool = False):
        self.dir = Path(experiment_dir)
        self.flush_each = flush_each
        self.finish_in_background = finish_in_background
        self._finishing: threading.Thread | None = None
        self.grid, self.encoded = grid, encoded or {}
        self.epsilon, self.confidence, self.metric = epsilon, confidence, metric
        self.mirror, self.upload_every_s = mirror, upload_every_s
        self._load()

    @property
    def tb_dir(self) -> Path:
        return self.dir / TENSORBOARD_DIR

    _STATE = ("dir", "grid", "encoded", "epsilon", "confidence", "metric", "mirror", "upload_every_s", "flush_each")

    def __getstate__(self):  # Tune pickles callbacks into tuner.pkl: never writers or stale state
        return {k: getattr(self, k) for k in self._STATE}

    def __setstate__(self, state):
        self.__dict__.update({"flush_each": False, **state, "finish_in_background": False, "_finishing": None})
        self._load()

    def setup(self, **info):
        self._load()

    def _load(self) -> None:
        """Points already in ``results.csv`` (an earlier driver of this experiment wrote them) are not written again."""
        from lth_tune.tune.results import RESULTS_FILE

        self.names = RunNames(self.grid, self.encoded)
        self._writers: dict[str, Any] = {}
        self._written: set[tuple[str, int, str]] = set()
        self._uploaded = -math.inf
        path = self.dir / RESULTS_FILE
        #: this callback saw the experiment from its start: every point in the files is one it wrote
        self._fresh = not path.is_file() and not self.tb_dir.exists()
        if path.is_file():
            try:
                df = _frame(pd.read_csv(path), self.names)
                self._written = {(r, int(lv), b) for r, lv, b in zip(df["_run"], df["level"], df["branch"])}
            except (OSError, KeyError, ValueError) as err:
                logger.warning("TensorBoard: could not read %s (%s); writing every point", path, err)

    def _run_of(self, trial) -> str:
        return self.names.run(self.names.params(trial.config), trial.trial_id)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from lth_tune.tune.trainable import DIVERGED, steps_of

        if result.get(DIVERGED):
            return
        run = self._run_of(trial)
        for step in steps_of(result):
            if "level" in step:
                self._write_step(run, step)
        self._mirror()

    def _write_step(self, run: str, step: dict) -> None:
        level, branch = int(step["level"]), step.get("branch") or TICKET
        if (run, level, branch) in self._written:
            return
        try:
            if run not in self._writers:
                self._writers[run] = _writer(self.tb_dir / run)
            w = self._writers[run]
            for tag, value in scalars(step, branch).items():
                w.add_scalar(tag, value, level)
            if self.flush_each:  # otherwise the writer flushes every 10 s, on close and before a mirror upload
                w.flush()
            self._written.add((run, level, branch))
        except OSError as err:  # TensorBoard is a view: a full disk must not end the study
            logger.warning("TensorBoard: could not write %s: %s", run, err)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(self._run_of(trial))
        self._mirror(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(self._run_of(trial))

    def _close(self, run: str) -> None:
        w = self._writers.pop(run, None)
        if w is not None:
            w.close()

    def on_experiment_end(self, trials, **info):
        for run in list(self._writers):
            self._close(run)
        if self.finish_in_background:
            self._finishing = threading.Thread(target=self._finish, name="tensorboard-final", daemon=True)
            self._finishing.start()
        else:
            self._finish()

    def wait(self) -> None:
        """Return once the final rewrite is written (at once unless it runs in the background)."""
        if self._finishing is not None:
            self._finishing.join()
            self._finishing = None

    def _finish(self) -> None:
        """The final rewrite from ``results.csv`` (:func:`write_tensorboard`), then the mirror."""
        from lth_tune.tune.results import RESULTS_FILE

        path = self.dir / RESULTS_FILE
        if path.is_file():
            try:
                # a sweep that started this experiment wrote each trial's curves itself: those stay
                live = self._written if self._fresh else None
                write_tensorboard(self.tb_dir, pd.read_csv(path), grid=self.grid, encoded=self.encoded,
                                  epsilon=self.epsilon, confidence=self.confidence, metric=self.metric,
                                  written_live=live)
            except Exception as err:  # noqa: BLE001 - a view: the results are safe in results.csv
                logger.warning("TensorBoard: could not rewrite %s from %s: %s", self.tb_dir, path, err)
        self._mirror(force=True, replace=True)

    def _mirror(self, force: bool = False, replace: bool = False) -> None:
        if not self.mirror or not (force or time.monotonic() - self._uploaded >= self.upload_every_s):
            return
        from lth_tune.tune.results import upload_tree

        try:
            for w in self._writers.values():
                w.flush()
            upload_tree(self.tb_dir, self.mirror, replace=replace)
            self._uploaded = time.monotonic()
        except OSError as err:
            logger.warning("TensorBoard: could not mirror %s to %s: %s", self.tb_dir, self.mirror, err)


__all__ = ["TENSORBOARD_DIR", "RunNames", "TensorBoardCallback", "format_value", "layout", "scalars", "tag_of",
           "write_tensorboard"]
