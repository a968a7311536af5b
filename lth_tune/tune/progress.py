"""The sweep's progress display: one live block instead of Tune's tables (``lth-tune sweep --verbose`` keeps those).

    trials 12/30 done · 2 running · 0 errored   IMP levels 150/420   elapsed 3m12s   ETA 5m40s
    best so far: val_acc 0.8123 at level 13 (density 0.055): lr=0.1 lam=1e-4 seed=2

On a terminal the block is redrawn in place at most every ``refresh_s`` seconds; elsewhere (CI, a pipe, a log
file) it is printed as one line at most every ``interval_s`` seconds and whenever a trial ends. Levels are IMP
levels (PBP: stages) of the ticket branch; controls are not counted. A resumed driver starts from the rows of
``results.csv``, so its counts include what ran before the interruption; its ETA comes from this driver's own pace.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
from ray import tune

from lth_tune.config import ExperimentConfig

TICKET = "ticket"


def levels_of(cfg: ExperimentConfig) -> int:
    """Reports on the ticket branch of one trial: IMP levels 0..L, or the PBP stages."""
    from lth_tune.runs import RUNS

    stages = getattr(RUNS[cfg.kind], "num_stages", None)
    return int(stages) if cfg.kind != "imp" and stages else cfg.pruning.levels + 1


class TrialLevels:
    """``config → levels_of(trial experiment)`` (picklable: Tune keeps callbacks in tuner.pkl)."""

    def __init__(self, base: dict[str, Any], encoded: dict[str, list] | None = None):
        self.base, self.encoded = base, encoded or {}

    def __call__(self, config: dict[str, Any]) -> int:
        from lth_tune.tune.trainable import trial_config

        return levels_of(trial_config(self.base, config, self.encoded))


def duration(seconds: float) -> str:
    """``42s``, ``3m12s``, ``1h05m``."""
    if not math.isfinite(seconds):
        return "?"
    s = round(max(seconds, 0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class ProgressDisplay(tune.Callback):
    """Driver callback printing the progress block (module docstring).

    ``name_of(config) -> str`` names a trial by its searched values (e.g. ``RunNames.trial``); ``trial_levels`` (a
    :class:`TrialLevels`) counts the ticket reports a trial makes; ``expected_levels`` stands for trials not created
    yet. Both are pickled with the callback.
    """

    def __init__(self, experiment_dir: str | Path, *, total_trials: int, expected_levels: float, metric: str,
                 mode: str, name_of=None, trial_levels=None, interval_s: float = 30.0, refresh_s: float = 1.0,
                 stream: TextIO | None = None, tty: bool | None = None):
        self.dir = Path(experiment_dir)
        self.total_trials, self.expected_levels = total_trials, expected_levels
        self.metric, self.mode = metric, mode
        self.name_of, self.trial_levels = name_of, trial_levels
        self.interval_s, self.refresh_s = interval_s, refresh_s
        self.stream, self.tty = stream, tty
        self._reset()

    _STATE = ("dir", "total_trials", "expected_levels", "metric", "mode", "name_of", "trial_levels", "interval_s",
              "refresh_s", "tty")

    def __getstate__(self):  # pickled into tuner.pkl: settings only, never the stream
        return {k: getattr(self, k) for k in self._STATE}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.stream = None
        self._reset()

    def _reset(self) -> None:
        self._start = time.monotonic()
        self._levels: dict[str, set[int]] = {}  # trial → ticket levels reported
        self._planned: dict[str, int] = {}  # trial → ticket levels it will report
        self._latest: dict[str, dict[str, Any]] = {}  # trial → its latest ticket report (metric, level, name)
        self._status: dict[str, str] = {}
        self._done_at_start = 0
        self._drawn_lines = 0
        self._last_print = -math.inf
        self._last_state: tuple = ()
        self._finished = False
        self._checked_restored = False

    # ------------------------------------------------------------------ Tune hooks
    def setup(self, **info):
        self._reset()
        self._seed_from_results()
        self._done_at_start = self.levels_done

    def _seed_from_results(self) -> None:
        from lth_tune.tune.results import RESULTS_FILE, with_branch

        path = self.dir / RESULTS_FILE
        if not path.is_file():
            return
        try:
            df = with_branch(pd.read_csv(path))
        except (OSError, ValueError):
            return
        for row in df[df["branch"] == TICKET].sort_values("level").to_dict("records"):
            config = {k.removeprefix("config/"): (v.item() if hasattr(v, "item") else v)
                      for k, v in row.items() if k.startswith("config/")}
            self._record(row["trial_id"], config, row)

    def _record(self, trial_id: str, config: dict, result: dict) -> None:
        self._levels.setdefault(trial_id, set()).add(int(result["level"]))
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            self._latest[trial_id] = {"value": float(value), "level": int(result["level"]),
                                      "density": result.get("density"), "config": config}
        if trial_id not in self._planned and self.trial_levels is not None:
            try:
                self._planned[trial_id] = int(self.trial_levels(config))
            except Exception:  # noqa: BLE001 - a display estimate; fall back to the study's
                self._planned[trial_id] = round(self.expected_levels)

    def on_step_begin(self, iteration, trials, **info):
        """Once, on the first step: forget trials of ``results.csv`` that Tune does not know (a crashed driver's
        trials asked for again under new ids, as ``ResultsTable`` does), so their levels are not counted twice."""
        if self._checked_restored:
            return
        self._checked_restored = True
        known = {t.trial_id for t in trials}
        if not known:
            return
        for lost in set(self._levels) - known:
            for table in (self._levels, self._latest, self._planned, self._status):
                table.pop(lost, None)
        self._done_at_start = self.levels_done

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from lth_tune.tune.trainable import DIVERGED, steps_of

        if result.get(DIVERGED):
            return
        for step in steps_of(result):
            if (step.get("branch") or TICKET) == TICKET and "level" in step:
                self._record(trial.trial_id, trial.config, step)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._status[trial.trial_id] = "TERMINATED"
        self._show(trials, event=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._status[trial.trial_id] = "ERROR"
        self._show(trials, event=True)

    def on_step_end(self, iteration, trials, **info):
        self._show(trials)

    def on_experiment_end(self, trials, **info):
        self._show(trials, event=True, final=True)

    # ------------------------------------------------------------------ the block
    @property
    def levels_done(self) -> int:
        return sum(len(v) for v in self._levels.values())

    def _counts(self, trials) -> tuple[int, int, int]:
        status = {t.trial_id: t.status for t in trials}
        status.update(self._status)  # a trial's end is seen here before Tune updates its status
        values = list(status.values())
        return values.count("TERMINATED"), values.count("RUNNING"), values.count("ERROR")

    def _total_levels(self, trials) -> int:
        known = {t.trial_id for t in trials} | set(self._levels)
        planned = sum(self._planned.get(t, self.expected_levels) for t in known)
        errored = {t.trial_id for t in trials if t.status == "ERROR"} | {
            t for t, s in self._status.items() if s == "ERROR"}
        # an errored trial reports no more levels: count what it reported
        planned -= sum(self._planned.get(t, self.expected_levels) - len(self._levels.get(t, ())) for t in errored)
        return round(planned + max(self.total_trials - len(known), 0) * self.expected_levels)

    def _best(self) -> str:
        if not self._latest:
            return ""
        pick = max if self.mode == "max" else min
        trial, best = pick(self._latest.items(), key=lambda kv: kv[1]["value"])
        name = self.name_of(best["config"]) if self.name_of else f"trial {trial}"
        density = best["density"]
        where = f"level {best['level']}" + (f" (density {density:.3f})" if isinstance(density, float) else "")
        return f"best so far: {self.metric} {best['value']:.4f} at {where}: {name}"

    def lines(self, trials) -> list[str]:
        done, running, errored = self._counts(trials)
        levels, total = self.levels_done, max(self._total_levels(trials), self.levels_done)
        elapsed = time.monotonic() - self._start
        new = levels - self._done_at_start
        eta = elapsed / new * (total - levels) if new > 0 else math.inf
        first = (f"trials {done}/{self.total_trials} done · {running} running · {errored} errored   "
                 f"levels {levels}/{total}   elapsed {duration(elapsed)}   "
                 f"ETA {duration(eta) if levels < total else '0s'}")
        best = self._best()
        return [first, best] if best else [first]

    def _out(self) -> TextIO:
        return self.stream or sys.stdout

    def _is_tty(self) -> bool:
        if self.tty is not None:
            return self.tty
        isatty = getattr(self._out(), "isatty", None)
        return bool(isatty and isatty())

    def _show(self, trials, event: bool = False, final: bool = False) -> None:
        if self._finished:
            return
        now = time.monotonic()
        tty = self._is_tty()
        if not (final or (tty and now - self._last_print >= self.refresh_s)
                or (not tty and (event or now - self._last_print >= self.interval_s))):
            return
        out, lines = self._out(), self.lines(trials)
        state = (self._counts(trials), self.levels_done, lines[1:])
        if not tty and event and state == self._last_state and now - self._last_print < self.interval_s:
            return  # nothing new to say (e.g. the experiment's end right after its last trial's)
        self._last_print, self._last_state = now, state
        if tty:
            clear = f"\x1b[{self._drawn_lines}F" if self._drawn_lines else ""
            out.write(clear + "".join(f"\x1b[2K{line}\n" for line in lines))
            self._drawn_lines = len(lines)
        else:
            out.write("  ·  ".join(lines) + "\n")
        out.flush()
        self._finished = final
