"""TensorBoard of a study (lth_tune/tune/tensorboard.py) and the progress display (progress.py), without Ray running:
run names, tags, step = level, mean-over-seeds runs, HParams sessions and verdicts, and resume-safety."""

import io
import math
from types import SimpleNamespace

import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lth_tune.stats import winning_level
from lth_tune.tune.progress import ProgressDisplay, duration
from lth_tune.tune.tensorboard import (
    RunNames,
    TensorBoardCallback,
    format_value,
    layout,
    scalars,
    tag_of,
    write_tensorboard,
)

GRID = {"train.lr": [0.01, 0.1], "regularizer.lam": [0.0, 1e-4], "regularizer.kind": ["l2_init"], "seed": [0, 1]}


def results(controls: bool = True) -> pd.DataFrame:
    """A results.csv of the GRID: 2 lrs × lam 1e-4 × 2 seeds, IMP levels 0..2, reinit at level 2."""
    rows = []
    for i, (lr, seed) in enumerate([(0.01, 0), (0.01, 1), (0.1, 0), (0.1, 1)]):
        for level in range(3):
            for branch in (["reinit"] if controls and level == 2 else []) + ["ticket"]:
                acc = 0.9 - 0.01 * level * (1 + 5 * (lr == 0.1)) + 0.002 * seed - (0.1 if branch == "reinit" else 0)
                rows.append({"trial_id": f"t{i}", "trial_name": f"run_{i}", "config/train.lr": lr,
                             "config/regularizer.lam": 1e-4, "config/seed": seed, "level": level, "branch": branch,
                             "density": 0.8 ** level, "sparsity": 1 - 0.8 ** level, "test_acc": acc, "val_acc": acc,
                             "train_loss": 0.1 * level, "dist_init": 0.5 * level, "time_s": 1.0})
    return pd.DataFrame(rows)


def read(run_dir):
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def points(acc, tag):
    return [(e.step, round(e.value, 6)) for e in acc.Scalars(tag)]


def test_tags_are_grouped_by_meaning_and_tune_internals_are_dropped():
    assert tag_of("test_acc") == "accuracy/test" and tag_of("train_loss") == "loss/train"
    assert tag_of("density") == "ticket/density" and tag_of("dist_init") == "ticket/dist_init"
    assert tag_of("hessian_trace") == "flatness/hessian_trace" and tag_of("expected_sharpness") == "flatness/sharpness"
    assert tag_of("ss_bound") == "bound/ss_bound" and tag_of("instability_barrier") == "instability/barrier"
    assert tag_of("test_acc", "reinit") == "reinit/accuracy/test" and tag_of("density", "random_prune") == \
        "random_prune/density"
    assert tag_of("level") is None and tag_of("cert_delta") is None and tag_of("ss_delta") is None
    tune_result = {"done": False, "training_iteration": 3, "time_total_s": 4.0, "time_this_iter_s": 1.0,
                   "iterations_since_restore": 3, "should_checkpoint": True, "timestamp": 1, "pid": 7,
                   "checkpoint_score": 3, "level": 2, "branch": "ticket", "test_acc": 0.5, "config/seed": 1,
                   "stage_name": "prior", "diverged": None, "val_acc": float("nan")}
    assert scalars(tune_result) == {"accuracy/test": 0.5}


@pytest.mark.parametrize("value, text", [(1e-4, "1e-4"), (0.1, "0.1"), (0.0, "0"), (2, "2"), (2.0, "2"),
                                         (2.5e-3, "2.5e-3"), (0.05, "0.05"), ("sgd", "sgd"), (True, "True")])
def test_values_are_short_and_exact(value, text):
    assert format_value(value) == text


def test_run_names_come_from_the_searched_values():
    names = RunNames(GRID)
    assert names.keys == ["train.lr", "regularizer.lam", "seed"]  # a key with one value names nothing
    params = names.params({"train.lr": 0.1, "regularizer.lam": 1e-4, "seed": 2})
    assert names.run(params) == "lr=0.1 lam=1e-4 seed=2"
    assert names.configuration(params) == "lr=0.1 lam=1e-4 mean"
    encoded = RunNames({"model.widths": [[32], [64, 64]], "train.lr": [0.1, 0.2]}, {"model.widths": [[32], [64, 64]]})
    assert encoded.trial({"model.widths": 1, "train.lr": 0.2}) == "widths=[64, 64] lr=0.2"  # grid index decoded
    assert RunNames({"train.lr": [0.1]}).run({}, "abc") == "trial abc"


def test_write_tensorboard_runs_tags_steps_means_and_hparams(tmp_path):
    df = results()
    runs = write_tensorboard(tmp_path, df, grid=GRID, epsilon=0.015, metric="val_acc")
    assert sorted(runs) == sorted(["lr=0.01 lam=1e-4 seed=0", "lr=0.01 lam=1e-4 seed=1", "lr=0.1 lam=1e-4 seed=0",
                                   "lr=0.1 lam=1e-4 seed=1", "lr=0.01 lam=1e-4 mean", "lr=0.1 lam=1e-4 mean"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(runs)  # no "." run
    one = read(tmp_path / "lr=0.1 lam=1e-4 seed=1")
    tags = set(one.Tags()["scalars"])
    assert {"accuracy/test", "accuracy/val", "loss/train", "ticket/density", "ticket/dist_init", "time/step_s",
            "reinit/accuracy/test", "verdict/winning_level"} <= tags
    assert not any(t.startswith(("ray/", "other/")) or "iteration" in t for t in tags)
    assert points(one, "ticket/density") == [(0, 1.0), (1, 0.8), (2, 0.64)]  # step = IMP level
    assert points(one, "reinit/accuracy/test") == [(2, round(0.9 - 0.12 + 0.002 - 0.1, 6))]
    mean = read(tmp_path / "lr=0.1 lam=1e-4 mean")
    assert points(mean, "accuracy/test") == [(lv, round(0.9 - 0.06 * lv + 0.001, 6)) for lv in range(3)]
    # verdict (ε = 0.015): lr=0.01 drops 0.02 by level 2 -> winning level 1; lr=0.1 drops 0.06 at level 1 -> none
    assert points(read(tmp_path / "lr=0.01 lam=1e-4 mean"), "verdict/winning_level") == [(2, 1.0)]
    assert points(read(tmp_path / "lr=0.01 lam=1e-4 mean"), "verdict/winning_density") == [(2, 0.8)]
    assert points(mean, "verdict/winning_ticket") == [(2, 0.0)] and points(mean, "verdict/winning_density") == \
        [(2, 1.0)]
    # HParams: one session per run, the experiment (columns) once, the custom-scalars layout once
    files = sorted(tmp_path.rglob("events.out.tfevents*"))
    blobs = b"".join(f.read_bytes() for f in files)
    assert blobs.count(b"_hparams_/experiment") == 1 and blobs.count(b"_hparams_/session_start_info") == 6
    assert blobs.count(b"custom_scalars__config__") == 1
    for text in (b"train.lr", b"regularizer.lam", b"seed", b"mean", b"test acc (sparsest)", b"winning density"):
        assert text in blobs


def test_rewriting_is_idempotent(tmp_path):
    """A resumed driver rewrites the directory at its end: every point once, no stale runs."""
    df = results()
    write_tensorboard(tmp_path, df, grid=GRID)
    (tmp_path / "ghost run").mkdir()  # e.g. a trial dropped on resume, written live before the crash
    write_tensorboard(tmp_path / "ghost run", df.head(3), grid=GRID)
    write_tensorboard(tmp_path, df, grid=GRID)
    assert not (tmp_path / "ghost run").exists()
    acc = read(tmp_path / "lr=0.01 lam=1e-4 seed=0")
    assert [s for s, _ in points(acc, "accuracy/test")] == [0, 1, 2]


def test_layout_puts_every_configuration_of_a_metric_in_one_chart():
    out = layout({"accuracy/test", "ticket/density", "reinit/accuracy/test", "flatness/hessian_trace"})
    assert out["accuracy"]["test accuracy"] == ["Multiline", [r"^accuracy/test$"]]
    assert "ticket vs controls" in out and out["flatness"]["hessian_trace"] == ["Multiline", [r"^flatness/hessian_trace$"]]


def trial(tid, lr, seed, status="RUNNING"):
    return SimpleNamespace(trial_id=tid, config={"train.lr": lr, "regularizer.lam": 1e-4, "seed": seed},
                           status=status)


def test_callback_writes_each_point_once_and_skips_what_results_csv_holds(tmp_path):
    df = results(controls=False)
    df[df["trial_id"] == "t0"].to_csv(tmp_path / "results.csv", index=False)  # an earlier driver wrote t0
    cb = TensorBoardCallback(tmp_path, grid=GRID)
    cb.setup()
    t0, t1 = trial("t0", 0.01, 0), trial("t1", 0.01, 1)
    for t, level in ((t0, 0), (t1, 0), (t1, 1), (t1, 1)):  # t1 restored from its checkpoint repeats level 1
        cb.on_trial_result(0, [t0, t1], t, {"level": level, "branch": "ticket", "test_acc": 0.5 + level,
                                            "training_iteration": level + 1, "done": False})
    cb.on_trial_complete(0, [t0, t1], t1)
    live = read(tmp_path / "tensorboard" / "lr=0.01 lam=1e-4 seed=1")
    assert points(live, "accuracy/test") == [(0, 0.5), (1, 1.5)] and "ray/tune/done" not in live.Tags()["scalars"]
    assert not (tmp_path / "tensorboard" / "lr=0.01 lam=1e-4 seed=0").exists()
    import pickle

    again = pickle.loads(pickle.dumps(cb))  # Tune keeps callbacks in tuner.pkl
    assert again.dir == cb.dir and again.grid == GRID
    df.to_csv(tmp_path / "results.csv", index=False)
    cb.on_experiment_end([t0, t1])  # the final rewrite from results.csv
    final = read(tmp_path / "tensorboard" / "lr=0.01 lam=1e-4 seed=1")
    assert [s for s, _ in points(final, "accuracy/test")] == [0, 1, 2]


def test_final_rewrite_in_the_background_writes_what_the_synchronous_one_writes(tmp_path):
    import pickle

    df = results(controls=False)
    trials = [trial("t0", 0.01, 0), trial("t1", 0.01, 1)]
    written = {}
    for background in (False, True):
        exp = tmp_path / str(background)
        exp.mkdir()
        df.to_csv(exp / "results.csv", index=False)
        cb = TensorBoardCallback(exp, grid=GRID, finish_in_background=background)
        cb.setup()
        cb.on_experiment_end(trials)
        cb.wait()
        assert cb._finishing is None
        runs = sorted(p.name for p in (exp / "tensorboard").iterdir())
        written[background] = {run: points(read(exp / "tensorboard" / run), "accuracy/test") for run in runs}
    assert written[True] == written[False] and len(written[True]) >= 2
    # a callback Tune unpickles (a resumed sweep: nobody can wait for it) finishes before on_experiment_end returns
    again = pickle.loads(pickle.dumps(TensorBoardCallback(tmp_path / "True", grid=GRID, finish_in_background=True)))
    assert again.finish_in_background is False


def _without_time(content: bytes) -> str:
    from tensorboard.plugins.hparams import plugin_data_pb2

    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    data.session_start_info.start_time_secs = 0
    return str(data)


def _everything(tb_dir):
    """{run: {tag: points}} of every scalar, plus each run's HParams session values."""
    out = {}
    for run_dir in sorted(p for p in tb_dir.iterdir() if p.is_dir()):
        acc = read(run_dir)
        content = {tag: points(acc, tag) for tag in acc.Tags()["scalars"]}
        content["_hparams"] = sorted((tag, _without_time(data)) for tag, data in
                                     acc.PluginTagToContent("hparams").items())
        out[run_dir.name] = content
    return out


def _live_sweep(exp, df, extra_point=None):
    """The callback through a fresh sweep of ``df``'s results; returns the trial runs' live event files (with their
    modification times) before the experiment ends."""
    exp.mkdir()
    cb = TensorBoardCallback(exp, grid=GRID, epsilon=0.015, metric="val_acc")
    cb.setup()
    trials = {tid: trial(tid, rows["config/train.lr"].iloc[0], rows["config/seed"].iloc[0])
              for tid, rows in df.groupby("trial_id")}
    for row in df.to_dict("records"):
        cb.on_trial_result(0, list(trials.values()), trials[row["trial_id"]],
                           {**row, "training_iteration": 1, "done": False})
    for t in trials.values():
        cb.on_trial_complete(0, list(trials.values()), t)
    if extra_point:
        cb._written.add(extra_point)
    files = {p: p.stat().st_mtime_ns for p in (exp / "tensorboard").rglob("events.out.tfevents*")}
    df.to_csv(exp / "results.csv", index=False)
    cb.on_experiment_end(list(trials.values()))
    return files


def test_a_fresh_sweep_keeps_its_live_curves_and_ends_with_what_a_full_rewrite_writes(tmp_path):
    df = results()
    write_tensorboard(tmp_path / "full", df, grid=GRID, epsilon=0.015, metric="val_acc")
    full = _everything(tmp_path / "full")
    live = _live_sweep(tmp_path / "live", df)
    assert all(p.exists() and p.stat().st_mtime_ns == m for p, m in live.items())  # kept, not rewritten
    assert _everything(tmp_path / "live" / "tensorboard") == full
    run = "lr=0.1 lam=1e-4 seed=1"
    assert len(list((tmp_path / "live" / "tensorboard" / run).glob("events*"))) == 2  # + HParams session, verdict
    # a trial run whose live points differ from results.csv (a level the table no longer holds) is rewritten
    other = _live_sweep(tmp_path / "other", df, extra_point=(run, 7, "ticket"))
    assert not any(p.exists() for p in other if p.parent.name == run)
    assert all(p.exists() for p in other if p.parent.name != run)
    assert len(list((tmp_path / "other" / "tensorboard" / run).glob("events*"))) == 1
    assert _everything(tmp_path / "other" / "tensorboard") == full


def test_winning_level_is_the_sparsest_level_within_epsilon_of_dense():
    dense = {0: 0.90, 1: 0.92}
    by_level = {0: dense, 1: {0: 0.89, 1: 0.91}, 2: {0: 0.80, 1: 0.91}, 3: {0: 0.895, 1: 0.915}}
    level, drops = winning_level(dense, by_level, epsilon=0.01)
    assert level == 3 and math.isclose(drops[2].mean, 0.055) and drops[1].n == 2
    assert winning_level(dense, {0: dense, 1: {0: 0.5, 1: 0.5}}, epsilon=0.01)[0] is None


def progress(tmp_path, out, *, total_trials: int, interval_s: float) -> ProgressDisplay:
    """The progress block of a study of the GRID with 3 levels a trial, written to ``out`` as to a file."""
    p = ProgressDisplay(tmp_path, total_trials=total_trials, expected_levels=3, metric="val_acc", mode="max",
                        name_of=RunNames(GRID).trial, trial_levels=lambda config: 3, stream=out, tty=False,
                        interval_s=interval_s)
    p.setup()
    return p


def test_progress_display_block_and_throttling(tmp_path):
    out = io.StringIO()
    p = progress(tmp_path, out, total_trials=4, interval_s=3600)
    t0, t1 = trial("t0", 0.01, 0), trial("t1", 0.1, 1)
    p.on_step_end(0, [t0, t1])  # first line at once, then at most every interval_s
    p.on_trial_result(0, [t0, t1], t0, {"level": 0, "branch": "ticket", "val_acc": 0.7, "density": 1.0})
    p.on_trial_result(0, [t0, t1], t1, {"level": 0, "branch": "ticket", "val_acc": 0.8, "density": 1.0})
    p.on_trial_result(0, [t0, t1], t1, {"level": 1, "branch": "reinit", "val_acc": 0.9})  # controls don't count
    p.on_step_end(0, [t0, t1])
    assert out.getvalue().count("\n") == 1
    t0.status = "TERMINATED"
    p.on_trial_complete(0, [t0, t1], t0)  # a trial's end is always shown
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "trials 1/4 done · 1 running · 0 errored" in lines[1] and "levels 2/12" in lines[1]
    assert "best so far: val_acc 0.8000 at level 0 (density 1.000): lr=0.1 lam=1e-4 seed=1" in lines[1]
    p.on_experiment_end([t0, t1])  # nothing new since: no repeated line
    assert len(out.getvalue().splitlines()) == 2
    tty = io.StringIO()
    q = ProgressDisplay(tmp_path, total_trials=1, expected_levels=3, metric="val_acc", mode="max", stream=tty,
                        tty=True, refresh_s=0)
    q.setup()
    q.on_step_end(0, [])
    q.on_step_end(0, [])
    assert tty.getvalue().count("\x1b[1F") == 1  # redrawn in place
    assert duration(42) == "42s" and duration(192) == "3m12s" and duration(3900) == "1h05m"


def test_progress_counts_every_level_of_a_batched_report(tmp_path):
    """``search.report_every_s``: one result carries the levels since the last report (``earlier_steps``)."""
    from lth_tune.tune.trainable import EARLIER_STEPS

    out = io.StringIO()
    p = progress(tmp_path, out, total_trials=1, interval_s=0)
    t0 = trial("t0", 0.01, 0)
    p.on_trial_result(0, [t0], t0, {"level": 2, "branch": "ticket", "val_acc": 0.6, "density": 0.64, EARLIER_STEPS: [
        {"level": 0, "branch": "ticket", "val_acc": 0.9, "density": 1.0},
        {"level": 2, "branch": "reinit", "val_acc": 0.95},  # a control: not a level
        {"level": 1, "branch": "ticket", "val_acc": 0.7, "density": 0.8}]})
    p.on_step_end(0, [t0])
    line = out.getvalue().splitlines()[-1]
    assert "levels 3/3" in line and "best so far: val_acc 0.6000 at level 2" in line
