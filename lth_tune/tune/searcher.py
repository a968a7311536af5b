"""The one adapter between Ray Tune and Optuna: a Tune ``Searcher`` that drives an Optuna study.

It is written on public interfaces only: Ray's ``Searcher`` (``suggest``, ``on_trial_result``,
``on_trial_complete``, ``save``/``restore``; a DeveloperAPI, which may change between Ray minor releases, hence
``ray<2.61`` in pyproject.toml) and Optuna's ask-and-tell (``Study.ask``/``tell``, ``Trial.report``,
``Study.get_trials(states=...)``) and storage API (``BaseStorage.set_trial_state_values`` on the storage this
module is handed). It replaces a subclass of Ray's ``OptunaSearch`` that read OptunaSearch's and Optuna's
private state. ``tests/tune/test_searcher.py`` checks those interfaces and the seeded suggestions on the
installed Ray and Optuna, and names the locked versions (constraints.txt) when they differ.

The Optuna calls are the ones ``OptunaSearch`` made (same study, sampler, pruner, ask/tell order), so a seeded
sampler suggests what it suggested before, and a searcher checkpoint written by the OptunaSearch-based searcher
(the same attribute names) restores.
"""

from __future__ import annotations

import logging
import math
import pickle
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

logger = logging.getLogger(__name__)

#: what ``save`` writes and ``restore`` reads (Ray's OptunaSearch used the same names)
_STATE = ("_space", "_storage", "_study_name", "_ot_study", "_ot_trials", "_completed_trials", "_tried")


class DurableOptunaSearch(Searcher):
    """An Optuna study over a finite grid that does not re-run grid points and whose restore tidies an RDB study.

    *Repeats.* TPE and random sampling on a categorical grid re-suggest points already tried. Following
    Optuna's advice for duplicates, a repeat is told to the sampler with the known value (FAIL while the
    first run is still going) and the sampler is asked again, until an untried point comes up or the grid
    is exhausted (then a repeat runs).

    *Durability* (``storage``). Tune saves the searcher (sampler state included) with its trial list, so
    after a driver crash both resume from the same moment. The database may be ahead: trials asked for
    after that moment stay RUNNING there for ever. They are marked FAIL on restore; Tune asks again.
    """

    MAX_ASKS = 50

    def __init__(self, space: dict[str, optuna.distributions.BaseDistribution] | None = None,
                 metric: str | None = None, mode: str | None = None,
                 sampler: optuna.samplers.BaseSampler | None = None, study_name: str | None = None,
                 storage: optuna.storages.BaseStorage | None = None):
        super().__init__(metric=metric, mode=mode)
        self._space = dict(space or {})
        self._storage = storage
        self._study_name = study_name or "optuna"  # OptunaSearch's name for an in-memory study
        self._ot_study: optuna.Study | None = None
        self._ot_trials: dict[str, optuna.Trial] = {}  # Tune trial id -> the Optuna trial asked for it
        self._completed_trials: set[str] = set()
        self._tried: dict[tuple, float | None] = {}  # grid point -> value (None while running)
        if mode:
            self._ot_study = optuna.create_study(
                storage=storage, sampler=sampler or optuna.samplers.TPESampler(),
                pruner=optuna.pruners.NopPruner(), study_name=self._study_name, load_if_exists=True,
                direction="minimize" if mode == "min" else "maximize",
            )
            if metric and storage is not None:  # optuna-dashboard labels the objective with the study metric
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    self._ot_study.set_metric_names([metric])

    @property
    def study(self) -> optuna.Study | None:
        """The Optuna study (sampler, trials), e.g. for tests and dashboards."""
        return self._ot_study

    def suggest(self, trial_id: str) -> dict[str, Any]:
        for _ in range(self.MAX_ASKS - 1):
            trial = self._ask(trial_id)
            if len(self._tried) >= self._grid_size():
                break
            key = _grid_point(trial.params)
            if key not in self._tried:
                self._tried[key] = None
                return dict(trial.params)
            del self._ot_trials[trial_id]
            value = self._tried[key]
            self._ot_study.tell(trial, value, state=TrialState.COMPLETE if value is not None else TrialState.FAIL)
        return dict(self._ask(trial_id).params)

    def _ask(self, trial_id: str) -> optuna.Trial:
        if self._ot_study is None:
            raise RuntimeError("DurableOptunaSearch has no study: construct it with a mode, or restore() it")
        if trial_id not in self._ot_trials:
            self._ot_trials[trial_id] = self._ot_study.ask(fixed_distributions=self._space)
        return self._ot_trials[trial_id]

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials:
            logger.warning("Received additional result for trial %s, but it already finished", trial_id)
            return
        self._ot_trials[trial_id].report(result[self.metric], result["training_iteration"])  # Tune's step counter

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        value = result.get(self.metric) if result else None
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and not error and isinstance(value, (int, float)) and math.isfinite(value):
            self._tried[_grid_point(ot_trial.params)] = float(value)
        if trial_id in self._completed_trials:
            logger.warning("Received additional completion for trial %s, but it already finished", trial_id)
            return
        ot_trial = self._ot_trials[trial_id]
        state = TrialState.COMPLETE if value is not None else TrialState.FAIL if error else TrialState.PRUNED
        try:
            self._ot_study.tell(ot_trial, value, state=state)
        except Exception as exc:  # noqa: BLE001 - e.g. a sampler hook; the trial's state is stored regardless
            if isinstance(exc, RuntimeError) and "Study.stop" in str(exc):  # GridSampler: the grid is exhausted
                logger.debug(exc)
            else:
                logger.warning(exc)
        self._completed_trials.add(trial_id)

    def _grid_size(self) -> int:
        return math.prod(len(d.choices) for d in self._space.values())

    def save(self, checkpoint_path: str) -> None:
        state = {name: getattr(self, name) for name in _STATE}
        state.update(_metric=self.metric, _mode=self.mode)
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        Searcher.__init__(self, metric=state.get("_metric"), mode=state.get("_mode"))
        self._space = dict(state.get("_space") or {})
        self._storage = state.get("_storage")
        self._study_name = state.get("_study_name", "optuna")
        self._ot_study = state.get("_ot_study")
        self._ot_trials = state.get("_ot_trials", {})
        self._completed_trials = state.get("_completed_trials", set())
        self._tried = state.get("_tried", {})
        self._fail_orphans()

    def _fail_orphans(self) -> None:
        """RUNNING trials of the RDB study that this checkpoint never asked for become FAIL."""
        if self._storage is None or self._ot_study is None:
            return
        known = {t.number for t in self._ot_trials.values()}
        study_id = self._storage.get_study_id_from_name(self._ot_study.study_name)
        for t in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number not in known:
                trial_id = self._storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
                self._storage.set_trial_state_values(trial_id, TrialState.FAIL)


def _grid_point(params: dict[str, Any]) -> tuple:
    return tuple(sorted(params.items()))
