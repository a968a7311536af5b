"""Multi-node storage: results tables mirrored to a pyarrow URI, Optuna RDB storage, trial resources.

The end-to-end S3 test runs against a local moto server (``python -m moto.server`` on 127.0.0.1, no network)
and is skipped where moto is not installed.
"""

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
import torch
import yaml

from lth_tune.config import StudyError, load_study, study_from_dict
from lth_tune.tune import trainable as trainable_mod
from lth_tune.tune.results import ResultsTable, download_missing, upload_files
from lth_tune.tune.sweep import join_uri, make_trainable, optuna_storage_url, run_sweep


def trial(tid, lr=0.1):
    """The attributes of ``ray.tune.experiment.Trial`` that the results table reads."""
    return SimpleNamespace(trial_id=tid, config={"train.lr": lr}, error_file=None, status="RUNNING", checkpoint=None,
                           __str__=lambda: tid)


def result(level, acc=0.5):
    return {"level": level, "density": 0.8**level, "val_acc": acc, "test_acc": acc, "training_iteration": level + 1}


def remote_csv(root: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(root / name, keep_default_na=False)


def test_tables_round_trip_through_a_pyarrow_uri(tmp_path):
    local, remote = tmp_path / "local", tmp_path / "bucket" / "exp"
    local.mkdir()
    (local / "study.json").write_text("{}")
    (local / "results.csv").write_text("a\n1\n")
    upload_files(local, f"file://{remote}", ["study.json", "results.csv", "trials.csv"])  # missing: skipped
    assert sorted(p.name for p in remote.iterdir()) == ["results.csv", "study.json"]
    fresh = tmp_path / "fresh"
    assert download_missing(f"file://{remote}", fresh, ["study.json", "results.csv", "trials.csv"]) == [
        "study.json", "results.csv"]
    (fresh / "results.csv").write_text("newer local copy\n")
    assert download_missing(f"file://{remote}", fresh, ["results.csv"]) == []  # never overwrites local files
    assert (fresh / "results.csv").read_text() == "newer local copy\n"
    assert join_uri("s3://b/p/?endpoint_override=h:1", "exp") == "s3://b/p/exp?endpoint_override=h:1"


def test_results_table_mirrors_throttled_and_at_every_trial_end(tmp_path):
    remote = tmp_path / "bucket" / "exp"
    table = ResultsTable(tmp_path / "exp", mirror=f"file://{remote}", upload_every_s=3600)
    t = trial("t1")
    table.on_trial_result(0, [t], t, result(0))
    assert len(remote_csv(remote, "results.csv")) == 1  # the first flush uploads
    table.on_trial_result(1, [t], t, result(1))
    assert len(remote_csv(remote, "results.csv")) == 1  # then at most every upload_every_s …
    assert len(pd.read_csv(tmp_path / "exp" / "results.csv")) == 2  # … while the local table is always current
    table.on_trial_complete(2, [t], t)
    assert len(remote_csv(remote, "results.csv")) == 2  # … and always when a trial ends
    assert list(remote_csv(remote, "trials.csv")["status"]) == ["TERMINATED"]
    restored = ResultsTable.__new__(ResultsTable)
    restored.__setstate__(table.__getstate__())  # Tune pickles callbacks into tuner.pkl
    assert restored.mirror == f"file://{remote}" and len(restored.rows) == 2


def test_results_table_drops_rows_of_trials_tune_no_longer_knows(tmp_path):
    table = ResultsTable(tmp_path)
    a, b = trial("a"), trial("b")
    for t in (a, b):
        table.on_trial_result(0, [a, b], t, result(0))
    resumed = ResultsTable(tmp_path)  # a driver restarted from an experiment checkpoint that predates trial b
    resumed.on_step_begin(0, [a])
    assert set(pd.read_csv(tmp_path / "results.csv")["trial_id"]) == {"a"}
    assert list(pd.read_csv(tmp_path / "trials.csv")["trial_id"]) == ["a"]
    resumed.on_step_begin(1, [])  # only once: later steps never drop anything
    assert len(pd.read_csv(tmp_path / "results.csv")) == 1


def test_diverged_result_gives_no_row_but_the_error_reason(tmp_path):
    table = ResultsTable(tmp_path)
    t = trial("d")
    table.on_trial_result(0, [t], t, result(0))
    table.on_trial_result(1, [t], t, {"level": 1, "diverged": "training loss is nan in epoch 1", "val_acc": float("nan")})
    table.on_trial_error(1, [t], t)
    assert list(pd.read_csv(tmp_path / "results.csv")["level"]) == [0]
    status = pd.read_csv(tmp_path / "trials.csv").iloc[0]
    assert status["status"] == "ERROR" and status["error"] == "DivergedError at level 1: training loss is nan in epoch 1"
    retried = SimpleNamespace(max_failures=2)
    trainable_mod.NoRetryOnDivergence().on_trial_result(1, [], retried, {"diverged": "nan"})
    assert retried.max_failures == 0


def test_trial_resources_custom_and_fractional_gpu(monkeypatch):
    study = study_from_dict({"name": "r", "resources": {"gpu": 0.25, "custom": {"worker": 1}},
                             "search": {"space": {"train.lr": {"choice": [0.1]}}}})
    assert make_trainable(study)._resources.required_resources == {"CPU": 1.0, "GPU": 0.25, "worker": 1.0}
    with pytest.raises(StudyError, match="custom"):
        study_from_dict({"name": "r", "resources": {"custom": {"worker": 0}}})
    with pytest.raises(StudyError, match="custom"):
        study_from_dict({"name": "r", "resources": {"custom": {"GPU": 1}}})
    capped = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f: capped.append(f))
    threads = torch.get_num_threads()
    try:
        trainable_mod.configure_torch(1, 0.25)
    finally:
        torch.set_num_threads(threads)
    assert capped == [0.25]  # four trials share one GPU, each within its quarter of the memory


def test_optuna_storage_sqlite_shorthand(tmp_path):
    study = study_from_dict({"name": "s", "search": {"storage": "sqlite"}})
    assert optuna_storage_url(study, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'optuna.db'}"
    study = study_from_dict({"name": "s", "search": {"storage": "postgresql://db.internal/optuna"}})
    assert optuna_storage_url(study, tmp_path) == "postgresql://db.internal/optuna"


# --------------------------------------------------------------------------- S3 (moto server on loopback)


def _moto_python():
    for exe in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        if exe and subprocess.run([exe, "-c", "import moto.server"], capture_output=True, check=False).returncode == 0:
            return exe
    return None


@pytest.fixture
def s3_bucket(monkeypatch):
    exe = _moto_python()
    if exe is None:
        pytest.skip("moto is not installed (pip install 'moto[server]')")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(urllib.request.Request(f"{endpoint}/lth-bucket", method="PUT"), timeout=2)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    pytest.skip("moto server did not start")
                time.sleep(0.3)
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(key, value)  # inherited by the Ray workers the sweep starts
        yield "lth-bucket"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.e2e
def test_sweep_on_s3_storage_and_resume_from_a_fresh_driver(s3_bucket, tmp_path, data_root):
    import pyarrow.fs

    study = {
        "name": "s3study",
        "experiment": {"seed": 1, "data": {"dataset": "mnist1d", "root": data_root, "train_subset": 600},
                       "model": {"name": "mlp", "widths": [32]}, "train": {"epochs": 2, "batch_size": 64},
                       "pruning": {"levels": 1}},
        "search": {"sampler": "grid", "space": {"train.lr": {"choice": [0.05, 0.1]}}, "storage": "sqlite"},
        "output": {"dir": str(tmp_path / "local")},
    }
    path = tmp_path / "s3study.yaml"
    path.write_text(yaml.safe_dump(study))
    # allow_delayed_open: small objects as one PutObject (moto 5.2's multipart completion confuses Arrow's SDK)
    storage = f"s3://{s3_bucket}/studies?allow_delayed_open=true"
    outcome = run_sweep(load_study(path), storage=storage, verbose=0)
    assert outcome.num_trials == 2 and outcome.num_errors == 0

    fs, _ = pyarrow.fs.FileSystem.from_uri(storage)  # the moto endpoint, from AWS_ENDPOINT_URL
    files = [f.path.removeprefix(f"{s3_bucket}/studies/s3study/") for f in
             fs.get_file_info(pyarrow.fs.FileSelector(f"{s3_bucket}/studies/s3study", recursive=True))
             if f.type == pyarrow.fs.FileType.File]
    assert {"study.json", "results.csv", "trials.csv", "optuna.db", "tuner.pkl"} <= set(files)
    assert sum(f.endswith("/imp_state.pt") for f in files) == 2 * 2  # a checkpoint per trial per level
    tensorboard = sorted(f.split("/")[1] for f in files if f.startswith("tensorboard/") and "tfevents" in f)
    assert sorted(set(tensorboard)) == ["lr=0.05", "lr=0.1"]  # TensorBoard, one run per trial, mirrored
    assert not [f for f in files if "tfevents" in f and not f.startswith("tensorboard/")]  # none in trial dirs
    with fs.open_input_stream(f"{s3_bucket}/studies/s3study/results.csv") as f:
        remote = pd.read_csv(f)
    pd.testing.assert_frame_equal(remote, outcome.results)

    shutil.rmtree(tmp_path / "local")  # a new driver machine: nothing local, everything in the bucket
    again = run_sweep(load_study(path), storage=storage, resume=True, verbose=0)
    assert (tmp_path / "local" / "s3study" / "study.json").is_file()
    db = f"sqlite:///{tmp_path / 'local' / 's3study' / 'optuna.db'}"  # the Optuna study came back too
    assert len(optuna.load_study(study_name="s3study", storage=db).trials) == 2
    pd.testing.assert_frame_equal(again.results, outcome.results)
    with pytest.raises(StudyError, match="--resume"):
        run_sweep(load_study(path), storage=storage, verbose=0)  # the bucket's experiment is never clobbered


def test_restored_searcher_fails_rdb_trials_asked_for_after_its_checkpoint(tmp_path):
    from lth_tune.tune.searcher import DurableOptunaSearch
    from lth_tune.tune.sweep import make_searcher

    study = study_from_dict({"name": "orphans", "search": {"sampler": "random", "storage": "sqlite", "num_trials": 4,
                                                           "space": {"train.lr": {"choice": [0.01, 0.1]}}}})
    limiter = make_searcher(study, tmp_path)
    searcher = limiter.searcher
    assert isinstance(searcher, DurableOptunaSearch)
    searcher.suggest("a")
    searcher.save(str(tmp_path / "searcher.pkl"))  # Tune's experiment checkpoint
    searcher.suggest("b")  # asked for after it: the driver dies before the next checkpoint
    restored = DurableOptunaSearch()
    restored.restore(str(tmp_path / "searcher.pkl"))
    db = optuna.load_study(study_name="orphans", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state.name for t in db.trials] == ["RUNNING", "FAIL"]  # "a" goes on; "b" will be asked for again
    restored.on_trial_complete("a", {"val_acc": 0.5})
    assert optuna.load_study(study_name="orphans", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials[0].state.name \
        == "COMPLETE"
