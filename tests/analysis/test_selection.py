"""Certified selection over the declared grid, Figure 4 and the sensitivity table (analysis.bounds)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from analysis.selection import NonFiniteSpaceError, certified_selection
from analysis.ticket_bounds import run_bound_analyses, sensitivity_table
from lth_tune.config import StudyError
from lth_tune.pacbayes import certify

SIGMAS = [0.03, 0.1]


def _record(grid=None, levels="last", prior_sigmas=SIGMAS, pruning_levels=2) -> dict:
    grid = {"train.lr": [0.01, 0.03, 0.1], "seed": [0, 1]} if grid is None else grid
    size = int(np.prod([len(v) for v in grid.values()])) if grid else 1
    return {
        "study": {"experiment": {
            "bound": {"levels": levels, "prior_sigma": 0.01, "prior_sigmas": prior_sigmas, "delta": 0.05,
                      "delta_prime": 0.01, "mc_samples": 100, "steps": 10},
            "pruning": {"levels": pruning_levels},
        }},
        "grid": grid,
        "grid_size": size,
        "num_trials": size,
    }


def _results(bound_levels=(2,)) -> pd.DataFrame:
    """Three trials (of a 6-point grid) with three IMP levels; bounds at ``bound_levels``."""
    rows = []
    rng = np.random.default_rng(0)
    for t, lr in enumerate([0.01, 0.03, 0.1]):
        for level in range(3):
            row = {"trial_id": f"t{t}", "level": level, "config/train.lr": lr, "config/seed": 0,
                   "density": 0.8**level, "test_acc": 0.6 + 0.1 * t - 0.01 * level, "train_acc": 0.9}
            if level in bound_levels:
                for p, scale in (("ss", 1.0), ("gauss", 3.0)):
                    for j, s in enumerate(SIGMAS):
                        row[f"{p}_sp{j}_prior_sigma"] = s
                        row[f"{p}_sp{j}_emp_risk_mc"] = float(0.3 - 0.05 * t + 0.02 * j + 0.01 * level)
                        row[f"{p}_sp{j}_kl"] = float(scale * (200 + 50 * t - 30 * j + rng.uniform(0, 5)))
                    row.update({f"{p}_m": 100.0, f"{p}_n": 5000.0, f"{p}_bound": 0.5, f"{p}_delta": 0.05,
                                f"{p}_delta_prime": 0.01})
            rows.append(row)
    return pd.DataFrame(rows)


def _best_by_hand(df, prefix, K, levels=(2,)):
    best = None
    for _, row in df[df["level"].isin(levels)].iterrows():
        for j in range(len(SIGMAS)):
            c = certify(row[f"{prefix}_sp{j}_emp_risk_mc"], 100, row[f"{prefix}_sp{j}_kl"], 5000, delta=0.05,
                        delta_prime=0.01, form="kl", grid_size=K)
            if best is None or c.bound < best[0].bound:
                best = (c, row["trial_id"], j, int(row["level"]))
    return best


def test_union_bound_uses_declared_grid_not_rows():
    df = _results()
    sel = certified_selection(_record(), df, prefix="ss")
    # K = 6 declared grid points × 2 σ_p × 1 level, although only 3 trials (6 candidates) ran
    assert sel["K"] == 12 and sel["K_grid"] == 6 and sel["J_prior_sigmas"] == 2 and sel["L_levels"] == 1
    assert sel["num_candidates"] == 6
    cert, trial, j, _ = _best_by_hand(df, "ss", 12)
    assert sel["bound"] == cert.bound and sel["trial_id"] == trial and sel["prior_index"] == j
    assert sel["delta_eff"] == pytest.approx(0.05 / 12) and sel["delta_prime_eff"] == pytest.approx(0.01 / 12)
    assert sel["confidence"] == pytest.approx(0.94)
    assert sel["test_error"] == pytest.approx(1 - df.loc[(df.trial_id == trial) & (df.level == 2), "test_acc"].item())
    assert sel["prior_sigma"] == SIGMAS[j]
    # not the number of rows: certifying at K = #candidates would give a smaller (invalid) bound
    assert sel["bound"] > _best_by_hand(df, "ss", 6)[0].bound


def test_larger_declared_grid_gives_larger_bound():
    df = _results()
    small = certified_selection(_record(), df)
    big = certified_selection(_record(grid={"train.lr": [0.01, 0.03, 0.1, 0.3, 1.0], "seed": [0, 1, 2, 3]}), df)
    assert big["K"] == 40 and big["bound"] > small["bound"]
    tighter = certified_selection(_record(), df, delta=0.2)
    assert tighter["bound"] < small["bound"] and tighter["delta"] == 0.2


def test_selection_over_levels_multiplies_K():
    df = _results(bound_levels=(1, 2))
    rec = _record(levels=[1, 2])
    sel = certified_selection(rec, df)
    assert sel["L_levels"] == 2 and sel["K"] == 24 and sel["num_candidates"] == 12
    assert sel["bound"] == _best_by_hand(df, "ss", 24, levels=(1, 2))[0].bound
    only_last = certified_selection(rec, df, levels="last")
    assert only_last["L_levels"] == 1 and only_last["K"] == 12 and only_last["level"] == 2
    with pytest.raises(StudyError, match="not all declared"):
        certified_selection(rec, df, levels=[0])


@pytest.mark.parametrize("mutate", [
    lambda r: r.update(grid_size=None),
    lambda r: r.pop("grid"),
    lambda r: r.pop("grid_size"),
    lambda r: r["grid"].update({"train.lr": []}),
    lambda r: r.update(grid_size=float("inf")),
    lambda r: r.update(grid_size=7),
])
def test_refuses_space_that_is_not_finite(mutate):
    rec = copy.deepcopy(_record())
    mutate(rec)
    with pytest.raises(NonFiniteSpaceError, match="refused"):
        certified_selection(rec, _results())
    assert issubclass(NonFiniteSpaceError, StudyError)  # `lth-tune analyze` prints it as a usage error


def test_refuses_more_candidates_than_declared():
    rec = _record(grid={"train.lr": [0.01]})
    with pytest.raises(ValueError, match="declared grid"):
        certified_selection(rec, _results())


def test_sensitivity_table_monotone():
    sel = certified_selection(_record(), _results())
    t = sensitivity_table(sel)
    reported = t[t["is_reported"]]
    assert list(reported["vary"]) == ["m", "delta", "delta_prime", "K"]
    assert np.allclose(reported["bound"], sel["bound"])
    for vary, ascending in (("m", False), ("K", True)):
        b = t[t["vary"] == vary].sort_values("value")["bound"].to_numpy()
        assert np.all(np.diff(b) <= 1e-15) if not ascending else np.all(np.diff(b) >= -1e-15)
    for vary in ("delta", "delta_prime"):  # larger δ or δ′, smaller bound
        b = t[t["vary"] == vary].sort_values("value")["bound"].to_numpy()
        assert np.all(np.diff(b) <= 1e-15)


def test_run_bound_analyses_writes_files(tmp_path, capsys):
    df = _results()
    written = run_bound_analyses(_record(), df, tmp_path)
    names = {p.name for p in written}
    assert {"bound_selection.json", "bound_selection.md", "fig4_bounds.png", "fig4_bounds_all_sigmas.png",
            "bound_sensitivity_ss.csv", "bound_sensitivity_gauss.csv"} <= names
    for p in written:
        assert p.is_file() and p.stat().st_size > 0
    payload = json.loads((tmp_path / "bound_selection.json").read_text())
    assert payload["selections"]["ss"]["K"] == 12 and "gauss" in payload["selections"]
    text = (tmp_path / "bound_selection.md").read_text()  # `lth-tune analyze` prints its "certified ..." lines
    assert "certified spike-and-slab" in text and "δ=0.05" in text and "K=12" in text
    assert run_bound_analyses(_record(), df.drop(columns=[c for c in df if c.startswith(("ss_", "gauss_"))]),
                              tmp_path / "none") == []
