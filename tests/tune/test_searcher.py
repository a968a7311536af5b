"""The Optuna searcher on a finite grid: no grid point runs twice while untried points remain; the adapter's
Ray and Optuna interfaces and its seeded suggestions on the installed versions (the lock's, or a loud failure)."""

import optuna
import pytest

from lth_tune.config import study_from_dict
from lth_tune.tune.searcher import DurableOptunaSearch
from lth_tune.tune.sweep import make_searcher
from tests.locked import works_with


def drive(sampler, n, complete_each=True):
    study = study_from_dict({
        "name": "s", "search": {"sampler": sampler, "seed": 0, "max_concurrent": 100,
                                "space": {"train.lr": {"choice": [0.01, 0.1]},
                                          "regularizer.lam": {"choice": [0.0, 0.001, 0.01]}}}})
    searcher = make_searcher(study).searcher
    seen = []
    for i in range(n):
        cfg = searcher.suggest(f"t{i}")
        point = (cfg["train.lr"], cfg["regularizer.lam"])
        seen.append(point)
        if complete_each:
            searcher.on_trial_complete(f"t{i}", {"val_acc": 0.5 + 0.1 * point[0] - point[1],
                                                  "training_iteration": 1})
    return seen, searcher


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid"])
def test_every_grid_point_once(sampler):
    seen, _ = drive(sampler, 6)
    assert len(set(seen)) == 6


def test_repeats_are_told_to_optuna_with_the_known_value():
    _, searcher = drive("tpe", 6)
    trials = searcher.study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    # every trial Optuna holds is a real run or a repeat told with the real run's value
    by_point = {}
    for t in complete:
        by_point.setdefault(tuple(sorted(t.params.items())), set()).add(t.value)
    assert len(by_point) == 6 and all(len(v) == 1 for v in by_point.values())


def test_a_repeat_runs_once_the_grid_is_exhausted():
    seen, _ = drive("random", 8)
    assert len(set(seen)) == 6 and len(seen) == 8


def test_concurrent_suggestions_are_distinct_while_points_remain():
    seen, _ = drive("tpe", 6, complete_each=False)
    assert len(set(seen)) == 6


# --------------------------------------------------------------------------- the adapter on the installed versions

#: the seeded suggestions (3×3 grid, two trials in flight, 12 asks: 9 distinct points, then repeats) of the
#: searcher before it became an adapter on public APIs (a subclass of Ray's OptunaSearch), under the lock
SEEDED = {
    "tpe": [[0.05, 0.01], [0.1, 0.0], [0.05, 0.0], [0.01, 0.0], [0.01, 0.01], [0.05, 0.001], [0.1, 0.001],
            [0.1, 0.01], [0.01, 0.001], [0.1, 0.0], [0.1, 0.001], [0.01, 0.0]],
    "random": [[0.05, 0.01], [0.1, 0.0], [0.05, 0.0], [0.01, 0.0], [0.01, 0.01], [0.05, 0.001], [0.1, 0.001],
               [0.1, 0.01], [0.01, 0.001], [0.1, 0.01], [0.1, 0.001], [0.01, 0.0]],
    "grid": [[0.01, 0.01], [0.1, 0.0], [0.05, 0.01], [0.05, 0.001], [0.1, 0.001], [0.01, 0.0], [0.01, 0.001],
             [0.05, 0.0], [0.1, 0.01], [0.1, 0.01], [0.05, 0.001], [0.01, 0.0]],
}


def installed_and_locked() -> str:
    import ray

    return (f"installed: ray {ray.__version__}, optuna {optuna.__version__}; lth-tune's searcher works with "
            f"{works_with('ray', 'optuna')} (constraints.txt: pip install -c constraints.txt -e .)")


def seeded_run(sampler, n=12, in_flight=2):
    study = study_from_dict({
        "name": "g", "search": {"sampler": sampler, "seed": 3, "max_concurrent": 100,
                                "space": {"train.lr": {"choice": [0.01, 0.05, 0.1]},
                                          "regularizer.lam": {"choice": [0.0, 0.001, 0.01]}}}})
    searcher = make_searcher(study).searcher
    seen, running = [], []
    for i in range(n):
        cfg = searcher.suggest(f"t{i}")
        seen.append([cfg["train.lr"], cfg["regularizer.lam"]])
        running.append((f"t{i}", cfg))
        value = 0.5 + cfg["train.lr"] - 3 * cfg["regularizer.lam"]
        searcher.on_trial_result(f"t{i}", {"val_acc": value / 2, "training_iteration": 1})
        if len(running) >= in_flight:
            tid, c = running.pop(0)
            searcher.on_trial_complete(tid, {"val_acc": 0.5 + c["train.lr"] - 3 * c["regularizer.lam"],
                                             "training_iteration": 2})
    return seen


@pytest.mark.parametrize("sampler", SEEDED)
def test_seeded_suggestions_are_the_locked_ones(sampler):
    """A study resumed under another Ray/Optuna must continue the sequence it started: a release that changes
    the seeded samplers or the searcher's ask/tell order fails here, not silently in a resumed study."""
    assert seeded_run(sampler) == SEEDED[sampler], f"the seeded {sampler} sampler suggests otherwise; " \
        + installed_and_locked()


def test_the_interfaces_the_searcher_uses_exist():
    import inspect

    from optuna.storages import BaseStorage
    from ray.tune.search import Searcher

    problems = []

    def needs(owner, attr, params=()):
        fn = getattr(owner, attr, None)
        if fn is None:
            problems.append(f"{getattr(owner, '__qualname__', owner.__name__)}.{attr} is gone")
            return
        missing = [p for p in params if p not in inspect.signature(fn).parameters]
        if missing:
            problems.append(f"{getattr(owner, '__qualname__', owner.__name__)}.{attr} takes no {missing}")

    needs(Searcher, "__init__", ("metric", "mode"))
    needs(Searcher, "suggest", ("trial_id",))
    needs(Searcher, "on_trial_result", ("trial_id", "result"))
    needs(Searcher, "on_trial_complete", ("trial_id", "result", "error"))
    needs(Searcher, "save", ("checkpoint_path",))
    needs(Searcher, "restore", ("checkpoint_path",))
    needs(Searcher, "save_to_dir", ("checkpoint_dir",))
    needs(Searcher, "restore_from_dir", ("checkpoint_dir",))
    for prop in ("metric", "mode"):
        if not isinstance(inspect.getattr_static(Searcher, prop, None), property):
            problems.append(f"Searcher.{prop} is no property")
    needs(optuna, "create_study", ("storage", "sampler", "pruner", "study_name", "load_if_exists", "direction"))
    needs(optuna.Study, "ask", ("fixed_distributions",))
    needs(optuna.Study, "tell", ("trial", "values", "state"))
    needs(optuna.Study, "get_trials", ("deepcopy", "states"))
    needs(optuna.Trial, "report", ("value", "step"))
    needs(BaseStorage, "get_study_id_from_name", ("study_name",))
    needs(BaseStorage, "get_trial_id_from_study_id_trial_number", ("study_id", "trial_number"))
    needs(BaseStorage, "set_trial_state_values", ("trial_id", "state", "values"))
    assert not problems, "; ".join(problems) + "; " + installed_and_locked()


def test_a_checkpoint_of_the_optuna_search_based_searcher_restores(tmp_path):
    """Experiments started before the adapter saved Ray's OptunaSearch state (its ``__dict__``); they resume."""
    ray_optuna = pytest.importorskip("ray.tune.search.optuna")
    space = {"train.lr": optuna.distributions.CategoricalDistribution([0.01, 0.05, 0.1])}

    def old():
        return ray_optuna.OptunaSearch(space=space, metric="val_acc", mode="max",
                                       sampler=optuna.samplers.RandomSampler(seed=1))

    before = old()
    before.suggest("a")
    before.on_trial_complete("a", {"val_acc": 0.5})
    before.suggest("b")
    before.save(str(tmp_path / "searcher.pkl"))
    restored = DurableOptunaSearch()
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.metric == "val_acc" and restored.mode == "max"
    restored.on_trial_complete("b", {"val_acc": 0.6})
    before.on_trial_complete("b", {"val_acc": 0.6})
    assert restored.suggest("c") == before.suggest("c")
    assert [t.state for t in restored.study.trials] == [optuna.trial.TrialState.COMPLETE] * 2 + \
        [optuna.trial.TrialState.RUNNING]
