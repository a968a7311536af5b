"""The Optuna searcher on a finite grid: no grid point runs twice while untried points remain."""

import optuna
import pytest

from lth_tune.config import study_from_dict
from lth_tune.tune.sweep import make_searcher


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
    trials = searcher._ot_study.get_trials(deepcopy=False)
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
