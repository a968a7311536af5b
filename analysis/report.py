"""``lth-tune analyze``: run every analysis whose inputs exist in the experiment's results."""

from __future__ import annotations

from pathlib import Path

from analysis.common import load_experiment
from analysis.imp_figures import accuracy_vs_density, accuracy_vs_lambda


def analyze_experiment(exp_dir: str | Path, out: str | Path | None = None, delta: float | None = None) -> int:
    exp_dir = Path(exp_dir)
    try:
        study, df = load_experiment(exp_dir)
    except FileNotFoundError as err:
        from lth_tune.config import StudyError

        raise StudyError(str(err)) from None
    out = Path(out) if out else exp_dir / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    keys = list(study["grid"])
    written = [accuracy_vs_density(study, df, out, keys)]
    for fn in (accuracy_vs_lambda,):
        p = fn(study, df, out)
        if p is not None:
            written.append(p)
    for extra in _extra_analyses():
        written.extend(extra(study, df, out, exp_dir=exp_dir, delta=delta) or [])
    for p in written:
        print(f"wrote {p}")
    return 0


def _extra_analyses():
    """Analyses that exist only when their modules do (flatness tables, certified selection)."""
    found = []
    try:
        from analysis.flatness import run_flatness_analyses

        found.append(run_flatness_analyses)
    except ImportError:
        pass
    try:
        from analysis.bounds import run_bound_analyses

        found.append(run_bound_analyses)
    except ImportError:
        pass
    return found
