"""Fault tolerance on one machine: a Ray head (no CPUs) + two worker nodes from ``ray.cluster_utils.Cluster``.

Trials request the custom resource ``worker`` (``resources.custom``), so they run on the worker nodes only and
a worker node can be killed under a running trial. Clusters are stopped by handle (``cluster.shutdown()``),
never with ``ray stop``.
"""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from lth_tune.config import load_study
from lth_tune.tune.sweep import make_searcher, run_sweep
from tests.tune import studies
from tests.tune.studies import assert_each_trial_matches_uninterrupted_run, sweep_process

pytestmark = pytest.mark.e2e

@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for _ in range(2):
            c.add_node(num_cpus=1, resources={"worker": 1})
        c.wait_for_nodes()
        yield c
    finally:
        c.shutdown()


def write_study(tmp_path, data_root, name, **kw):
    """Trials need the workers' custom resource, so they never land on the CPU-less head."""
    return studies.write_study(tmp_path, data_root, name, resources={"custom": {"worker": 1}}, **kw)


def read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, keep_default_na=False)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame()


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_node_failure_restarts_the_trial_from_its_last_level_checkpoint(cluster, tmp_path, data_root):
    import ray
    from ray._private.state import available_resources_per_node

    levels = 5
    path = write_study(tmp_path, data_root, "nodekill", space={"train.lr": {"choice": [0.05, 0.1]}},
                       levels=levels, epochs=60)
    exp = tmp_path / "results" / "nodekill"
    killed: dict = {}
    sweep: dict = {}

    def run():  # the driver in a thread: Cluster.add_node must be called from the main thread
        try:
            sweep["outcome"] = run_sweep(load_study(path), address=cluster.address, verbose=0)
        except BaseException as err:  # noqa: BLE001 - re-raised by the main thread's assertion
            sweep["error"] = err

    def busy_worker():
        if "outcome" in sweep or "error" in sweep:
            return "finished"
        df = read_csv(exp / "results.csv")
        if df.empty or df["level"].max() < 1 or not ray.is_initialized():
            return None
        free = available_resources_per_node()
        busy = [n for n in cluster.worker_nodes if free.get(n.unique_id, {}).get("worker", 0) == 0]
        return busy[0] if busy else None

    driver = threading.Thread(target=run, daemon=True)
    driver.start()
    node = wait_for(busy_worker, 180, "a worker node running a trial at level >= 1")
    assert node != "finished", sweep
    killed["rows_before"] = read_csv(exp / "results.csv")
    killed["node_id"] = node.unique_id
    cluster.remove_node(node, allow_graceful=False)  # the raylet and the trial's worker process die
    cluster.add_node(num_cpus=1, resources={"worker": 1})  # a replacement joins
    driver.join(timeout=240)
    assert "error" not in sweep, sweep["error"]
    outcome = sweep["outcome"]
    assert "node_id" in killed, "no node was killed"
    assert killed["node_id"] not in {n.unique_id for n in cluster.worker_nodes}
    assert len(killed["rows_before"]) < 2 * (levels + 1), "the kill came too late"

    assert outcome.num_errors == 0
    df = pd.read_csv(exp / "results.csv")
    assert len(df) == 2 * (levels + 1) and df["trial_id"].nunique() == 2
    assert not df.duplicated(["trial_id", "level"]).any()
    assert all(sorted(g["level"]) == list(range(levels + 1)) for _, g in df.groupby("trial_id"))
    trials = pd.read_csv(exp / "trials.csv")
    assert set(trials["status"]) == {"TERMINATED"}

    # Exactly one trial was restored mid-run, from a level checkpoint (not from scratch): Tune's own log of
    # that trial shows every level once, and an iteration counter that restarted at the level after the
    # last one it had reported before its node died.
    restored = []
    for d in exp.glob("trial_*"):
        progress = pd.read_csv(d / "progress.csv")
        assert sorted(progress["level"]) == list(range(levels + 1)), progress[["level", "training_iteration"]]
        if (progress["iterations_since_restore"] < progress["training_iteration"]).any():
            restored.append(d.name)
            first_after = progress[progress["iterations_since_restore"] == 1]["level"].max()
            before = killed["rows_before"]
            last_before = before.loc[before["trial_id"] == d.name.removeprefix("trial_"), "level"].max()
            assert first_after >= 1 and first_after >= last_before + 1  # continued after its last checkpoint
    assert len(restored) == 1, restored
    assert_each_trial_matches_uninterrupted_run(df, path, ["train.lr"])


def test_diverging_trial_errors_with_its_reason_and_is_not_retried(cluster, tmp_path, data_root):
    path = write_study(tmp_path, data_root, "diverge", space={"train.lr": {"choice": [0.05, 1.0e6]}},
                       levels=1, epochs=2, train={"momentum": 0.0})
    outcome = run_sweep(load_study(path), address=cluster.address, verbose=0)
    exp = tmp_path / "results" / "diverge"
    assert outcome.num_trials == 2 and outcome.num_errors == 1
    trials = pd.read_csv(exp / "trials.csv", keep_default_na=False).set_index("status")
    assert sorted(trials.index) == ["ERROR", "TERMINATED"]
    reason = trials.loc["ERROR", "error"]
    assert "DivergedError at level 0" in reason and "lower the learning rate" in reason
    df = pd.read_csv(exp / "results.csv")
    assert set(df["config/train.lr"]) == {0.05} and len(df) == 2  # the study went on; no row for the NaN
    error_file = exp / f"trial_{trials.loc['ERROR', 'trial_id']}" / "error.txt"
    assert error_file.read_text().count("Failure #") == 1  # no pointless retries (max_failures is 2)


def test_driver_kill_then_resume_reruns_no_completed_trial_and_continues_the_sampler(cluster, tmp_path, data_root):
    """Random sampler + sqlite study: after the resume, the completed Optuna trials (in order) are exactly
    the configurations an uninterrupted seeded sampler suggests; trials finished before the kill are untouched."""
    n, levels = 5, 2
    space = {"train.lr": {"choice": [0.01, 0.05, 0.1]}, "regularizer.lam": {"choice": [0.0, 0.01]}}
    # trials of several seconds (300 epochs a level of the tiny split): with trial processes reused, 30 epochs let all
    # five finish within the second between "two finished" and the kill
    path = write_study(tmp_path, data_root, "driverkill", space=space, levels=levels, epochs=300,
                       search={"sampler": "random", "seed": 5, "num_trials": n, "storage": "sqlite"})
    exp = tmp_path / "results" / "driverkill"
    cmd = [sys.executable, "-m", "lth_tune.cli", "sweep", str(path), "--address", cluster.address, "-v", "0"]
    # Tune saves its trial list + searcher every TUNE_GLOBAL_CHECKPOINT_S seconds ("auto": >= 10 s); a driver
    # crash loses what happened since. With 0 it saves at every controller step, so "finished before the
    # kill" below means "finished before the driver's last experiment checkpoint".
    env = dict(os.environ, PYTHONUNBUFFERED="1", TUNE_GLOBAL_CHECKPOINT_S="0")
    with sweep_process(cmd, env):  # killed at the end of the block: the driver only, the cluster it joined lives on
        def two_finished():
            t = read_csv(exp / "trials.csv")
            return not t.empty and (t["status"] == "TERMINATED").sum() >= 2

        wait_for(two_finished, 240, "two finished trials")
        trials_before = read_csv(exp / "trials.csv")
        done = list(trials_before.loc[trials_before["status"] == "TERMINATED", "trial_id"])
        rows_before = read_csv(exp / "results.csv")
        files_before = {t: snapshot(exp / f"trial_{t}") for t in done}
        time.sleep(1)  # a few controller steps: the experiment checkpoint has seen them finish
    assert (read_csv(exp / "trials.csv")["status"] == "TERMINATED").sum() < n, "the kill came too late"

    resumed = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300,
                             check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    df = pd.read_csv(exp / "results.csv")
    assert df["trial_id"].nunique() == n and len(df) == n * (levels + 1)
    assert not df.duplicated(["trial_id", "level"]).any()
    trials = pd.read_csv(exp / "trials.csv")
    assert len(trials) == n and set(trials["status"]) == {"TERMINATED"}
    # completed trials were not re-run: same checkpoint files, same rows, and Tune's own per-trial log shows
    # every level once from a single uninterrupted start
    for t in done:
        assert snapshot(exp / f"trial_{t}") == files_before[t], t
        progress = pd.read_csv(exp / f"trial_{t}" / "progress.csv")
        assert sorted(progress["level"]) == list(range(levels + 1))
        assert (progress["iterations_since_restore"] == progress["training_iteration"]).all()
        before = rows_before[rows_before["trial_id"] == t].reset_index(drop=True)
        after = df[df["trial_id"] == t].reset_index(drop=True)
        pd.testing.assert_series_equal(before["test_acc"].astype(float), after["test_acc"], check_names=False)
    # the sampler continued from its saved state: same suggestions as an uninterrupted seeded sampler
    study = load_study(path)
    ot = optuna.load_study(study_name=study.experiment_name, storage=f"sqlite:///{exp / 'optuna.db'}")
    complete = sorted((t for t in ot.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.number)
    assert not [t for t in ot.trials if t.state == optuna.trial.TrialState.RUNNING]
    # an uninterrupted searcher (seeded sampler; grid points already tried are skipped) suggests these
    reference = make_searcher(study.model_copy(update={"search": study.search.model_copy(update={"storage": None})}))
    expected = [dict(reference.searcher.suggest(f"ref{i}")) for i in range(n)]
    ran = []  # Optuna also holds the skipped repeats (told with the known value): keep first occurrences
    for t in complete:
        if t.params not in ran:
            ran.append(t.params)
    assert ran == expected
    assert sorted(map(tuple, df.groupby("trial_id")[["config/train.lr", "config/regularizer.lam"]].first().values)) \
        == sorted((p["train.lr"], p["regularizer.lam"]) for p in expected)
    # the trials the resumed driver ran or continued reproduce an uninterrupted run (the finished ones were
    # checked above to be byte-for-byte what they were before the kill)
    assert_each_trial_matches_uninterrupted_run(df[~df["trial_id"].isin(done)], path, list(space))


def snapshot(trial_dir: Path) -> dict[str, tuple[int, int]]:
    """The trial's checkpoints (written by the trial itself; the logs next to them are the driver's copies,
    synced from its staging directory with a lag, so their bytes may change after the trial ended)."""
    return {str(p.relative_to(trial_dir)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(trial_dir.glob("checkpoint_*/*")) if p.is_file()}
