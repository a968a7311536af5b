"""Study overhead: how much of a sweep's wall time is not level compute, for the current and the previous engine.

    python bench/study_overhead.py search_spaces/l2init.yaml                  # the main job, both engines, once
    python bench/study_overhead.py STUDY --repeats 2 --set experiment.train.epochs=5
    python bench/study_overhead.py STUDY --engines current --json out.json

Each run is the real ``lth-tune sweep STUDY`` (the CLI's code path: plan line, :func:`lth_tune.tune.sweep.run_sweep`,
then the figures and the report) in a fresh Python process with its own local Ray cluster, writing into a temporary
directory. Engines (:class:`lth_tune.tune.sweep.Engine`):

  current   ``sweep.ENGINE``: trial processes reused between trials, results tables rewritten from rows formatted once,
            TensorBoard flushed every 10 s, Ray started in the background while the driver builds the Tuner, the
            final TensorBoard rewrite while Ray shuts down; the study's own ``search.checkpoint_every_s`` and
            ``search.report_every_s``
  previous  ``sweep.PREVIOUS_ENGINE``: the design before issue 13 (a new process per trial, the tables rewritten
            through a pandas DataFrame and TensorBoard flushed after every result, Ray started before the Tuner
            is built, the final TensorBoard rewrite before the shutdown), with a report and a checkpoint after
            every step (``search.checkpoint_every_s=0``, ``search.report_every_s=0``, whatever the study file says)

Runs alternate between the engines (current, previous, current, ...), so changes of machine load hit both.

    overhead = 1 - (sum of time_s over every row of results.csv) / (workers x wall)

``wall`` is the sweep command's wall time from process start (interpreter and imports included) to the end of
its summary, without the end-of-sweep figures and report, which are shown on their own (``analysis s``): they are
not Tune overhead, but the user waits for them. ``total s`` is the whole command. ``workers`` = trials that can run at once: min(search.max_concurrent,
trials, CPUs // resources.cpu) (``--workers`` overrides). ``time_s`` is each level's (or control's) own compute:
prune, rewind, train, measure. Columns ``start`` / ``fit`` / ``end`` split ``run_sweep`` (checks, data and Ray
start-up / ``Tuner.fit`` / shutdown and summary); ``before`` is the process start-up and imports before it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("current", "previous")
#: before issue 13 a trial reported and checkpointed after every step, whatever the study file says
PREVIOUS_CADENCE = ["search.checkpoint_every_s=0", "search.report_every_s=0"]


def child(engine: str, study_path: str, out: str, overrides: list[str]) -> None:
    """One sweep, as ``lth-tune sweep`` runs it, with the given engine; prints one JSON line of timings."""
    t0 = time.monotonic()
    from lth_tune.cli import write_findings
    from lth_tune.config import load_study
    from lth_tune.runs.plan import plan_study
    from lth_tune.tune import sweep

    previous = engine == "previous"
    study = load_study(study_path, [*overrides, *(PREVIOUS_CADENCE if previous else []),
                                    f"output.dir={out}"])
    print(plan_study(study, time_it=False).summary_line())
    before = time.monotonic() - t0
    events: list[tuple] = []
    outcome = sweep.run_sweep(study, source=str(Path(study_path).resolve()), verbose=0,
                              engine=sweep.PREVIOUS_ENGINE if previous else sweep.ENGINE,
                              callbacks=(lambda: timeline_callback(events, t0),))
    t_job = time.monotonic()
    if not outcome.results.empty:
        write_findings(outcome.experiment_dir)
    analysis = time.monotonic() - t_job
    print("RESULT " + json.dumps({"before": before, **outcome.timings, "analysis": analysis,
                                  "summary_at": t_job - t0, "events": events,
                                  "experiment": str(outcome.experiment_dir), "errors": outcome.num_errors}))


def timeline_callback(events: list, t0: float):
    """A Tune callback noting, on the driver, when each result and each trial's end arrived (seconds after ``t0``)
    and the compute ``time_s`` of the steps it reports."""
    from ray import tune

    class Timeline(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            from lth_tune.tune.trainable import steps_of

            compute = sum(float(step.get("time_s") or 0.0) for step in steps_of(result))
            events.append(("result", trial.trial_id, time.monotonic() - t0, compute))

        def on_trial_complete(self, iteration, trials, trial, **info):
            events.append(("complete", trial.trial_id, time.monotonic() - t0, 0.0))

    return Timeline()


def attribute(events: list, workers: int, wall: float, offset: float) -> dict[str, float]:
    """Split the overhead's slot-seconds (``workers × wall − Σ time_s``) by where they are spent, from the driver's
    timeline (``offset``: seconds from the parent's clock start to the child's ``t0``, i.e. interpreter start):

    start    every slot until its first step begins (process start, imports, Ray start, trial processes start)
    reports  inside trials, between one result and the next step's compute (report, checkpoint, driver round trip)
    between  from a trial's end to the next trial's first step on a freed slot (Tune's reset and scheduling)
    tail     slots with nothing left to run while the last trials finish
    end      after the last trial: final rewrites, shutdown, summary (every slot)
    """
    results = [e for e in events if e[0] == "result"]
    completes = sorted(e[2] + offset for e in events if e[0] == "complete")
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    reports = 0.0
    for _, trial, t, compute in results:
        t += offset
        if trial in last:
            reports += max(0.0, t - last[trial] - compute)
        else:
            first[trial] = t - compute  # when the trial's first step began computing
        last[trial] = t
    starts = sorted(first.values())
    start = sum(starts[:workers])
    # a later trial takes the slot the earliest-ending unmatched trial freed
    between = sum(max(0.0, s - c) for s, c in zip(starts[workers:], completes))
    end_all = completes[-1] if completes else wall
    tail = sum(end_all - c for c in completes[-workers:]) if len(completes) >= workers else 0.0
    end = workers * max(0.0, wall - end_all)
    return {"start": start, "reports": reports, "between": between, "tail": tail, "end": end}


def workers_of(study, override: int | None) -> int:
    if override:
        return override
    cpus = os.cpu_count() or 1
    per_trial = max(study.resources.cpu, 1e-9)
    return max(1, min(study.search.max_concurrent, study.search.trials_to_run(), int(cpus // per_trial)))


def one_run(engine: str, study_path: str, overrides: list[str], workers: int, log: Path) -> dict:
    import pandas as pd

    with tempfile.TemporaryDirectory(prefix=f"overhead_{engine}_") as out:
        load = os.getloadavg()[0]
        t0 = time.monotonic()
        cmd = [sys.executable, __file__, "--child", engine, study_path, out, *[a for o in overrides for a in ("--set", o)]]
        with open(log, "w") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, check=False)
        wall_all = time.monotonic() - t0
        text = log.read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"{engine} run failed (exit {proc.returncode}); its output: {log}\n{text[-3000:]}")
        r = json.loads(lines[-1].removeprefix("RESULT "))
        df = pd.read_csv(Path(r["experiment"]) / "results.csv")
        level_s = float(df["time_s"].sum())
        wall = wall_all - r["analysis"]
        parts = attribute(r["events"], workers, wall, offset=wall - r["summary_at"])
        return {"engine": engine, "wall_s": wall, "level_s": level_s, "rows": len(df), "workers": workers,
                "overhead": 1 - level_s / (workers * wall), "before_s": r["before"], "start_s": r["start"],
                "fit_s": r["fit"], "end_s": r["end"], "analysis_s": r["analysis"], "errors": r["errors"],
                "load_before": load, "load_after": os.getloadavg()[0], "parts": parts, "total_s": wall_all}


def table(runs: list[dict]) -> str:
    head = (f"{'engine':<9}{'run':>4}{'wall s':>9}{'Σ level s':>11}{'workers':>8}{'overhead':>10}{'before s':>10}"
            f"{'start s':>9}{'fit s':>8}{'end s':>7}{'analysis s':>12}{'total s':>9}{'load':>11}")
    lines = [head, "-" * len(head)]
    for r in runs:
        lines.append(f"{r['engine']:<9}{r['run']:>4}{r['wall_s']:>9.1f}"
                     f"{r['level_s']:>11.1f}{r['workers']:>8}{r['overhead']:>9.1%}{r['before_s']:>10.1f}"
                     f"{r['start_s']:>9.1f}{r['fit_s']:>8.1f}{r['end_s']:>7.1f}{r['analysis_s']:>12.1f}"
                     f"{r['total_s']:>9.1f}"
                     f"{r['load_before']:>5.1f}-{r['load_after']:<5.1f}")
    lines.append("")
    names = list(runs[0]["parts"])
    head = f"{'engine':<9}{'run':>4}{'overhead slot-s':>17}" + "".join(f"{n:>10}" for n in names) + f"{'other':>9}"
    lines += ["where the overhead's slot-seconds (workers × wall − Σ level) go:", head, "-" * len(head)]
    for r in runs:
        total = r["workers"] * r["wall_s"] - r["level_s"]
        other = total - sum(r["parts"].values())
        lines.append(f"{r['engine']:<9}{r['run']:>4}{total:>17.1f}" + "".join(f"{r['parts'][n]:>10.1f}" for n in names)
                     + f"{other:>9.1f}")
    lines.append("")
    for engine in dict.fromkeys(r["engine"] for r in runs):
        mine = [r for r in runs if r["engine"] == engine]
        ov = [r["overhead"] for r in mine]
        walls = [r["wall_s"] for r in mine]
        spread = f" (spread {min(ov):.1%} to {max(ov):.1%})" if len(ov) > 1 else ""
        lines.append(f"{engine:<9} median overhead {statistics.median(ov):.1%}{spread}; median wall "
                     f"{statistics.median(walls):.1f} s; median end-of-sweep figures + report "
                     f"{statistics.median(r['analysis_s'] for r in mine):.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sys.path.insert(0, str(ROOT))
    if argv and argv[0] == "--child":
        engine, study_path, out, *rest = argv[1:]
        child(engine, study_path, out, [rest[i + 1] for i in range(0, len(rest), 2)])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", nargs="?", default=str(ROOT / "search_spaces" / "l2init.yaml"),
                   help="the study file (default: search_spaces/l2init.yaml, the main job)")
    p.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    p.add_argument("--repeats", type=int, default=1, help="runs per engine, interleaved")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a study override, as lth-tune sweep --set (repeatable)")
    p.add_argument("--workers", type=int, default=None, help="concurrent trials (default: from the study and CPUs)")
    p.add_argument("--json", default=None, help="also write the runs as JSON here")
    p.add_argument("--logs", default=None, help="keep each run's output in this directory")
    a = p.parse_args(argv)
    from lth_tune.config import load_study

    study = load_study(a.study, [*a.overrides])
    workers = workers_of(study, a.workers)
    logs = Path(a.logs or tempfile.mkdtemp(prefix="study_overhead_logs_"))
    logs.mkdir(parents=True, exist_ok=True)
    print(f"study overhead: {a.study} ({study.search.trials_to_run()} trials, {workers} at a time), engines "
          f"{' / '.join(a.engines)}, {a.repeats} run(s) each, interleaved; logs in {logs}", flush=True)
    runs = []
    for rep in range(a.repeats):
        order = a.engines if rep % 2 == 0 else list(reversed(a.engines))
        for engine in order:
            r = one_run(engine, str(Path(a.study).resolve()), a.overrides, workers, logs / f"{engine}_{rep + 1}.log")
            r["run"] = rep + 1
            runs.append(r)
            print(f"  {engine} run {rep + 1}: wall {r['wall_s']:.1f} s, Σ level {r['level_s']:.1f} s, "
                  f"overhead {r['overhead']:.1%}", flush=True)
    runs.sort(key=lambda r: (a.engines.index(r["engine"]), r["run"]))
    print()
    print(table(runs))
    print("\noverhead = 1 - Σ level time / (workers × wall); wall = the sweep command without its end-of-sweep "
          "figures and report (analysis s)")
    print("start: until each slot's first step computes; reports: between a trial's results and its next step; "
          "between: from a trial's end to the next trial's first step; tail: slots idle while the last trials "
          "finish; end: after the last trial (every slot); other: the rest")
    if a.json:
        Path(a.json).write_text(json.dumps(runs, indent=1))
    return 0 if all(r["errors"] == 0 and math.isfinite(r["overhead"]) for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
