"""`lth-tune sweep`: a Ray Tune ``Tuner`` driven by a seeded Optuna sampler over the study's finite grid."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lth_tune.config import StudyConfig, StudyError
from lth_tune.versions import version_differences, versions

if TYPE_CHECKING:
    import optuna
    import pandas as pd

# Optuna, pandas and Tune are imported where they are used, not here: `lth-tune sweep` imports this module before
# the study is checked, and the ≈1 s they take then overlaps the start of the Ray cluster (ClusterStart) instead.

STUDY_FILE = "study.json"
_SCALARS = (bool, int, float, str, type(None))


def __getattr__(name: str):
    """``DurableOptunaSearch``, the name under which older ``tuner.pkl`` files refer to the searcher."""
    if name == "DurableOptunaSearch":
        from lth_tune.tune.searcher import DurableOptunaSearch

        return DurableOptunaSearch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class SweepOutcome:
    experiment_dir: Path
    results: pd.DataFrame
    num_trials: int
    num_errors: int
    #: seconds spent in each phase of :func:`run_sweep` (``start``: checks, data and Ray start-up; ``fit``:
    #: ``Tuner.fit``; ``end``: ``ray.shutdown`` and the summary; ``total``)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Engine:
    """How a sweep drives Ray Tune. No choice here changes a number in ``results.csv`` or a guarantee (resume,
    node loss, driver loss); they change the study's overhead over its level compute, which
    ``bench/study_overhead.py`` measures for :data:`ENGINE` and :data:`PREVIOUS_ENGINE` side by side.

    ``reuse_actors``: one trial process per concurrent trial, reset between trials (``TuneConfig.reuse_actors``)
    instead of a new process (≈3 s of start-up) per trial. ``fast_tables``: ``results.csv``/``trials.csv`` rewritten
    after every result from rows formatted once (``results.CsvRows``, ≈1 ms at 800 rows) instead of through a
    DataFrame (≈20 ms; before every experiment-state save too, which Tune forces every few checkpoints, while the
    trials that reported wait for the driver). ``tensorboard_flush_each``: flush the TensorBoard
    event file after every result instead of every 10 s. ``overlap_start``: the sweep's local Ray cluster starts
    in the background (:class:`ClusterStart`) while the driver imports Tune and builds the Tuner, instead of
    before.
    ``overlap_end``: the final TensorBoard rewrite runs while the cluster shuts down, instead of before.
    ``quick_shutdown``: the sweep's own cluster stops with its autoscaler monitor killed first
    (:func:`shutdown_cluster`), instead of Ray's order, in which the monitor hangs for a second.
    ``no_idle_workers``: the sweep's own cluster does not start Ray's default worker processes when the driver
    connects (:class:`ClusterStart`): Tune's trial actors carry a runtime environment (Tune sets ``env_vars``), so
    they never run in those processes, which only take CPU (≈0.3 s each) while the trials' processes start.
    """

    reuse_actors: bool = True
    fast_tables: bool = True
    tensorboard_flush_each: bool = False
    overlap_start: bool = True
    overlap_end: bool = True
    quick_shutdown: bool = True
    no_idle_workers: bool = True


#: the default
ENGINE = Engine()
#: the design before issue 13 (a process per trial, tables rewritten through pandas, TensorBoard flushed per result,
#: Ray started before the Tuner is built)
PREVIOUS_ENGINE = Engine(reuse_actors=False, fast_tables=False, tensorboard_flush_each=True, overlap_start=False,
                         overlap_end=False, quick_shutdown=False, no_idle_workers=False)


class ClusterStart:
    """The sweep's own local Ray cluster, started in a background thread when ``background``: Ray's processes (GCS,
    raylet, agents) take ≈3 s to come up, nearly all of it the driver waiting, while the driver has Tune to import,
    the study record to write and the Tuner's parts to build. ``wait()`` returns once Ray is up (or raises what
    ``ray.init`` raised); ``stop()`` shuts the cluster down.

    The thread lives until ``stop()`` and shuts the cluster down itself: Ray starts its processes with a parent-death
    signal, which Linux sends when the *thread* that started them ends, so a thread that returned after ``ray.init``
    would take the cluster with it. ``ray.init`` in the main thread also sets a SIGTERM handler (exit, so ``atexit``
    shuts the cluster down) and, outside it, logs that it cannot: the handler is set here, in the calling thread."""

    def __init__(self, address: str | None, verbose: int, *, background: bool = True, quick_shutdown: bool = True,
                 no_idle_workers: bool = True):
        import threading

        self._monitor_first = quick_shutdown
        self._kwargs = {
            # address "local" always starts a fresh cluster for this sweep: without it ray.init() would attach to
            # whatever cluster last ran on this machine (another user's, or a test's)
            "address": address or "local", "include_dashboard": False, "logging_level": logging.WARNING,
            "log_to_driver": verbose > 1,
        }
        if no_idle_workers and address in (None, "local"):
            # Ray starts one default worker process per CPU when the first driver connects, but a Tune trial is an
            # actor with a runtime environment of Tune's (env_vars), which runs only in a process started for that
            # environment: the default ones would idle, after taking a second of CPU from the start-up on 2 cores.
            # Only for a cluster started here: a joined cluster has its own configuration.
            self._kwargs["_system_config"] = {"prestart_worker_first_driver": False}
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if not background:
            self._init()
            return
        if threading.current_thread() is threading.main_thread():
            import signal

            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
        self._up, self._done = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="ray-cluster", daemon=True)
        self._thread.start()

    def _init(self) -> None:
        import ray

        ray.init(**self._kwargs)

    def _run(self) -> None:
        import ray

        ray_worker_log = logging.getLogger("ray._private.worker")
        level = ray_worker_log.level
        ray_worker_log.setLevel(logging.ERROR)  # "SIGTERM handler is not set ..." (set by __init__ instead)
        try:
            self._init()
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread by wait()
            self._error = err
        finally:
            ray_worker_log.setLevel(level)
            self._up.set()
        self._done.wait()
        if ray.is_initialized():
            shutdown_cluster(monitor_first=self._monitor_first)

    def wait(self) -> None:
        if self._thread is not None:
            self._up.wait()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        import ray

        if self._thread is None:
            if ray.is_initialized():
                shutdown_cluster(monitor_first=self._monitor_first)
            return
        self._done.set()
        self._thread.join()


def shutdown_cluster(*, monitor_first: bool = True) -> None:
    """``ray.shutdown()``, with the autoscaler monitor stopped first unless ``monitor_first`` is false.

    ``ray.shutdown`` stops the raylet and the GCS before the monitor; the monitor's SIGTERM handler then reports its
    end to the GCS that is already gone and hangs until Ray kills it after a one-second grace period: a second at
    the end of every sweep, with the results already on disk. A sweep's own local cluster has no autoscaler whose
    end needs reporting, so the monitor is killed outright first (``Node.kill_monitor``, Ray's handle of the
    processes ``ray.init`` started; a driver that joined a cluster has none and nothing is killed)."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None) if monitor_first else None
    kill_monitor = getattr(node, "kill_monitor", None)
    if kill_monitor is not None:
        try:
            kill_monitor(check_alive=False)
        except Exception:  # noqa: BLE001 - ray.shutdown below stops it the slow way
            pass
    ray.shutdown()


def is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def join_uri(uri: str, name: str) -> str:
    """``s3://b/p?opt=1`` + ``name`` → ``s3://b/p/name?opt=1`` (pyarrow options stay in the query)."""
    base, sep, query = uri.partition("?")
    return f"{base.rstrip('/')}/{name}{sep}{query}"


def experiment_dir(study: StudyConfig, storage: str | None) -> tuple[str, Path]:
    """(Tune storage_path, local experiment directory for results.csv / study.json)."""
    storage = storage or study.output.dir
    if is_uri(storage):
        # Checkpoints and trial logs go to the URI; the driver also mirrors its tables there (see _upload).
        return storage, Path(study.output.dir).resolve() / study.experiment_name
    local = Path(storage.removeprefix("file://")).expanduser().resolve()
    return str(local), local / study.experiment_name


def prepare_data(study: StudyConfig) -> None:
    """Fail before any cluster starts if a dataset of the study (every one its grid declares) is missing;
    generate and cache every MNIST-1D size here, once, before the trials read the cache."""
    from lth_tune.data import DatasetNotFoundError, dataset_available, load_dataset

    d = study.experiment.data
    for name in study.search.grid().get("data.dataset", [d.dataset]):
        if name == "mnist1d":
            for size in study.search.grid().get("data.num_samples", [d.num_samples]):
                if size is not None and size >= 100_000:
                    print(f"generating MNIST-1D with {size} training examples (once; cached under the data root)")
                load_dataset("mnist1d", root=d.root, val_fraction=0.0, device="cpu", num_samples=size)
            continue
        if dataset_available(name, d.root):
            continue
        try:  # without download: the DatasetNotFoundError message says where to put the files
            load_dataset(name, root=d.root, download=d.download, val_fraction=0.0, device="cpu")
        except DatasetNotFoundError as err:
            raise StudyError(f"experiment.data.dataset: {err}") from None


def search_space(study: StudyConfig) -> tuple[dict[str, Any], dict[str, list]]:
    """Optuna distributions over the grid, plus the grid lists of keys whose values are not scalars."""
    import optuna

    space, encoded = {}, {}
    for key, values in study.search.grid().items():
        if all(isinstance(v, _SCALARS) for v in values):
            space[key] = optuna.distributions.CategoricalDistribution(values)
        else:
            encoded[key] = values
            space[key] = optuna.distributions.CategoricalDistribution(list(range(len(values))))
    return space, encoded


def make_sampler(study: StudyConfig) -> optuna.samplers.BaseSampler:
    import optuna

    s = study.search
    if s.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=s.seed)
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    grid = {k: list(d.choices) for k, d in search_space(study)[0].items()}
    return optuna.samplers.GridSampler(grid, seed=s.seed)


def optuna_storage_url(study: StudyConfig, exp_dir: Path) -> str | None:
    """``search.storage``: None (in memory), 'sqlite' (a file in the experiment directory) or a SQLAlchemy URL."""
    from lth_tune.tune.results import OPTUNA_DB

    url = study.search.storage
    if url == "sqlite":
        return f"sqlite:///{(exp_dir / OPTUNA_DB).resolve()}"
    return url


def make_searcher(study: StudyConfig, exp_dir: Path | None = None):
    import optuna
    from ray.tune.search import ConcurrencyLimiter

    from lth_tune.tune.searcher import DurableOptunaSearch

    space, _ = search_space(study)
    storage = None
    url = optuna_storage_url(study, exp_dir or Path(study.output.dir) / study.experiment_name)
    if url:
        storage = optuna.storages.RDBStorage(url)
    searcher = DurableOptunaSearch(
        space=space, metric=study.search.metric, mode=study.search.mode, sampler=make_sampler(study),
        study_name=study.experiment_name if storage else None, storage=storage,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=study.search.max_concurrent)


def make_trainable(study: StudyConfig, adopt: str | None = None):
    """The study's trainable with its resources; ``adopt``: the experiment's storage location on a resumed sweep,
    where trials asked for again find the checkpoints of the trials a crashed driver lost."""
    from ray import tune

    from lth_tune.tune.trainable import run_trainable

    _, encoded = search_space(study)
    base = study.experiment.model_dump(mode="json")
    if base["data"]["root"] is not None:  # trials run in their own working directory
        base["data"]["root"] = str(Path(base["data"]["root"]).expanduser().resolve())
    r = study.resources
    fn = tune.with_parameters(run_trainable, base=base, encoded=encoded, threads=r.torch_threads,
                              gpu_fraction=r.gpu if r.gpu < 1 else 0.0, metric=study.search.metric, adopt=adopt,
                              checkpoint_every_s=study.search.checkpoint_every_s,
                              report_every_s=study.search.report_every_s)
    return tune.with_resources(fn, {"cpu": r.cpu, "gpu": r.gpu, **r.custom})


def checkpoint_config(study: StudyConfig):
    """Keep what resume and analysis need: the latest checkpoint of every trial plus the steps its runner marks
    worth keeping (levels declared for flatness, bounds, controls or instability; the last level; every PBP
    stage), ranked by the trainable's ``checkpoint_score``; the rest is deleted as the trial moves on."""
    from ray import tune

    from lth_tune.runs import checkpoints_to_keep
    from lth_tune.tune.trainable import CHECKPOINT_SCORE

    keep = max(checkpoints_to_keep(study.experiment.with_params(point)) for point in study.search.points())
    return tune.CheckpointConfig(num_to_keep=keep + 1, checkpoint_score_attribute=CHECKPOINT_SCORE,
                                 checkpoint_score_order="max")


def num_samples(study: StudyConfig) -> int:
    return study.search.trials_to_run()


def write_study(study: StudyConfig, exp_dir: Path, source: str | None) -> None:
    exp_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "study": study.model_dump(mode="json"),
        "source": source,
        "grid": study.search.grid(),
        "grid_size": study.search.grid_size(),
        "num_trials": num_samples(study),
        "versions": versions(),  # lth-tune, Ray, Optuna, torch, ... that produced the run
    }
    tmp = exp_dir / (STUDY_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, exp_dir / STUDY_FILE)


def read_study_record(exp_dir: str | Path) -> dict[str, Any]:
    path = Path(exp_dir) / STUDY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not an lth-tune experiment directory (no {STUDY_FILE})")
    return json.loads(path.read_text())


def check_resume(study: StudyConfig, exp_dir: Path, resume: bool) -> None:
    exists = (exp_dir / STUDY_FILE).is_file()
    if resume and not exists:
        raise StudyError(f"--resume: no experiment at {exp_dir}; drop --resume to start it")
    if not resume and exists:
        raise StudyError(
            f"output: experiment {exp_dir} already exists; pass --resume to continue it or "
            f"--set output.name=NEW to start another"
        )
    if resume:
        saved = read_study_record(exp_dir)
        if saved["grid"] != json.loads(json.dumps(study.search.grid())):
            raise StudyError(f"--resume: the study's search.space differs from the one saved in {exp_dir}/{STUDY_FILE}")
        for line in version_differences(saved.get("versions"), versions()):
            print(f"lth-tune: warning: --resume: {line} ({exp_dir / STUDY_FILE})", file=sys.stderr)


def run_sweep(study: StudyConfig, *, address: str | None = None, storage: str | None = None,
              resume: bool = False, source: str | None = None, verbose: int = 0,
              engine: Engine | None = None, callbacks: tuple = ()) -> SweepOutcome:
    """Validate data, start (or join) Ray, run the Tuner, write results.csv, print the summary.

    ``verbose``: 0 the progress display (:mod:`lth_tune.tune.progress`), 1 Tune's tables, 2 also the trials' logs.
    TensorBoard goes to ``<experiment>/tensorboard`` (:mod:`lth_tune.tune.tensorboard`), not Tune's trial dirs.
    ``engine``: how Tune is driven (default :data:`ENGINE`; a resumed sweep keeps the trial-process reuse it started
    with). ``callbacks``: functions returning more Tune callbacks for a new sweep, called once Tune is imported
    (``bench/study_overhead.py`` times the trials with one)."""
    t_start = time.monotonic()
    engine = engine or ENGINE
    import ray

    storage_path, exp_dir = experiment_dir(study, storage)
    remote = join_uri(storage_path, study.experiment_name) if is_uri(storage_path) else None
    if remote:  # a driver on a new machine continues from the tables mirrored next to the checkpoints
        from lth_tune.tune.results import OPTUNA_DB, RESULTS_FILE, TRIALS_FILE, download_missing

        download_missing(remote, exp_dir, [STUDY_FILE, RESULTS_FILE, TRIALS_FILE, OPTUNA_DB])
    check_resume(study, exp_dir, resume)
    prepare_data(study)
    # Every check has passed: the cluster may start. Ray's processes come up (≈3 s, mostly the driver waiting for
    # them) while this thread imports Tune's parts, writes the study record and builds the Tuner's parts.
    started_here = not ray.is_initialized()
    cluster = ClusterStart(address, verbose, background=engine.overlap_start,
                           quick_shutdown=engine.quick_shutdown,
                           no_idle_workers=engine.no_idle_workers) if started_here else None
    views: list = []
    try:
        import optuna
        import pandas as pd
        from ray import tune
        from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

        from lth_tune.tune.results import (
            RESULTS_FILE,
            TRIALS_FILE,
            ResultsTable,
            order_rows,
            summary,
            upload_files,
        )
        from lth_tune.tune.tensorboard import TENSORBOARD_DIR
        from lth_tune.tune.trainable import NoRetryOnDivergence

        if not resume:
            write_study(study, exp_dir, source)
            if remote:
                upload_files(exp_dir, remote, [STUDY_FILE])
        if verbose < 2:  # "A new study created in memory", GridSampler's Study.stop outside optimize()
            optuna.logging.set_verbosity(optuna.logging.WARNING)
        table = ResultsTable(exp_dir, mirror=remote, fast=engine.fast_tables)
        views = [] if resume else view_callbacks(study, exp_dir, remote, verbose, engine)
        searcher = None if resume else make_searcher(study, exp_dir)
        checkpoints = None if resume else checkpoint_config(study)
        if cluster is not None:
            cluster.wait()
        trainable = make_trainable(study, adopt=(remote or str(exp_dir)) if resume else None)
        if resume:
            tuner = tune.Tuner.restore(remote or str(Path(storage_path) / study.experiment_name),
                                       trainable=trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=searcher, num_samples=num_samples(study),
                    metric=study.search.metric, mode=study.search.mode,
                    trial_dirname_creator=lambda t: f"trial_{t.trial_id}", reuse_actors=engine.reuse_actors,
                ),
                run_config=tune.RunConfig(
                    name=study.experiment_name, storage_path=storage_path,
                    failure_config=tune.FailureConfig(max_failures=study.search.max_failures),
                    checkpoint_config=checkpoints,
                    callbacks=[table, NoRetryOnDivergence(), CSVLoggerCallback(), JsonLoggerCallback(), *views,
                               *(make() for make in callbacks)],
                    verbose=verbose,
                ),
            )
        t_fit = time.monotonic()
        with _env(**quiet_tune(verbose)):
            grid = tuner.fit()
        t_fitted = time.monotonic()
    finally:
        _close(cluster, views)
    df = order_rows(pd.read_csv(exp_dir / RESULTS_FILE)) if (exp_dir / RESULTS_FILE).is_file() else table.frame()
    errors = sum(1 for r in grid if r.error is not None)
    print(summary(df, study.search.metric, study.search.mode, list(study.search.space)))
    if errors:
        print(f"{errors} of {len(grid)} trials errored; reasons in {exp_dir / TRIALS_FILE}")
    print(f"results: {exp_dir / RESULTS_FILE}{f' (mirrored to {remote})' if remote else ''}")
    tb = exp_dir / TENSORBOARD_DIR
    print(f"TensorBoard: tensorboard --logdir {_shell_path(tb)}"
          f"{f' (mirrored to {join_uri(remote, TENSORBOARD_DIR)})' if remote else ''}")
    t_end = time.monotonic()
    timings = {"start": t_fit - t_start, "fit": t_fitted - t_fit, "end": t_end - t_fitted, "total": t_end - t_start}
    return SweepOutcome(exp_dir, df, len(grid), errors, timings)


def _close(cluster: ClusterStart | None, views: list) -> None:
    """Shut the sweep's own cluster down (if it started one) and wait for the final TensorBoard rewrite, which ran
    meanwhile."""
    from lth_tune.tune.tensorboard import TensorBoardCallback

    if cluster is not None:
        cluster.stop()
    for view in views:
        if isinstance(view, TensorBoardCallback):
            view.wait()


def view_callbacks(study: StudyConfig, exp_dir: Path, remote: str | None, verbose: int, engine: Engine = ENGINE) -> list:
    """TensorBoard (always) and, without ``--verbose``, the progress display in place of Tune's tables."""
    from lth_tune.tune.progress import ProgressDisplay, TrialLevels, levels_of
    from lth_tune.tune.tensorboard import TENSORBOARD_DIR, RunNames, TensorBoardCallback

    grid, (_, encoded) = study.search.grid(), search_space(study)
    names = RunNames(grid, encoded)
    views = [TensorBoardCallback(exp_dir, grid=grid, encoded=encoded, epsilon=study.verdict.epsilon,
                                 confidence=study.verdict.confidence, metric=study.search.metric,
                                 mirror=join_uri(remote, TENSORBOARD_DIR) if remote else None,
                                 flush_each=engine.tensorboard_flush_each,
                                 finish_in_background=engine.overlap_end)]
    if verbose == 0:
        levels = [v + 1 for v in grid.get("pruning.levels", [])] or [levels_of(study.experiment)]
        base = study.experiment.model_dump(mode="json")
        views.append(ProgressDisplay(exp_dir, total_trials=num_samples(study), expected_levels=sum(levels) / len(levels),
                                     metric=study.search.metric, mode=study.search.mode, name_of=names.trial,
                                     trial_levels=TrialLevels(base, encoded)))
    return views


def quiet_tune(verbose: int) -> dict[str, str]:
    """Environment for ``Tuner.fit``: no TBXLogger (TensorBoard is ours, so no "To visualize your results with
    TensorBoard" hint either); at verbose 0 Tune's classic output engine, which prints nothing at that level (the
    newer one prints its configuration box regardless), and no "snapshotting has been triggered multiple times"
    warning, which small fast studies trigger. Variables the user set win."""
    env = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
    if verbose == 0:
        env.update(RAY_AIR_NEW_OUTPUT="0", TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S="0")
    return {k: os.environ.get(k, v) for k, v in env.items()}


@contextlib.contextmanager
def _env(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _shell_path(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))
