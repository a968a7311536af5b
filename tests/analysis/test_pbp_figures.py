"""Paper 004 Figure 4 / Figure 1 from PBP / PFT results tables."""

import itertools

import numpy as np
import pandas as pd
import pytest

from analysis.pbp_figures import run_pbp_analyses
from analysis.selection import NonFiniteSpaceError, certified_pbp_table
from lth_tune.config import StudyError
from lth_tune.pacbayes import certify


def study_record(grid, experiment_pbp=None):
    pbp = {"alpha": 0.5, "sparsity": 0.9, "init_criterion": "magnitude", "mode": "pbp"}
    pbp.update(experiment_pbp or {})
    size = int(np.prod([len(v) for v in grid.values()])) if grid else 1
    return {"study": {"experiment": {"seed": 0, "pbp": pbp}}, "grid": grid, "grid_size": size}


def pbp_results():
    rng = np.random.default_rng(0)
    rows = []
    grid = {"pbp.alpha": [0.4, 0.8], "pbp.sparsity": [0.5, 0.9], "pbp.prior_var": [1e-5, 1e-4]}
    for i, (a, s, v) in enumerate(itertools.product(*grid.values())):
        tid = f"t{i}"
        base = {"trial_id": tid, "config/pbp.alpha": a, "config/pbp.sparsity": s, "config/pbp.prior_var": v,
                "mode": "pbp"}
        rows.append({**base, "level": 0, "stage": 1, "density": 1.0, "test_acc": 0.9})
        risk = float(0.05 + 0.1 * s + 0.02 * rng.random())
        common = {"cert_emp_risk_mc": risk, "cert_m": 100, "cert_n": int(1000 * (1 - a)), "cert_delta": 0.05,
                  "cert_delta_prime": 0.01, "cert_confidence": 0.94}
        rows.append({**base, **common, "level": 1, "stage": 2, "cert_kl": 0.0, "density": 1 - s,
                     "test_err_prior": risk + 0.01, "test_acc": 1 - risk})
        c = certify(risk, 100, 5.0, int(1000 * (1 - a)), form="theorem1")
        rows.append({**base, **common, "level": 2, "stage": 3, "cert_kl": 5.0 + 10 * v * 1e4, "bound": c.bound,
                     "density": 1 - s, "test_err_posterior": risk, "test_err_prior": risk + 0.01,
                     "test_acc": 1 - risk})
    return grid, pd.DataFrame(rows)


def test_no_pbp_columns_gives_nothing(tmp_path):
    df = pd.DataFrame({"trial_id": ["a"], "level": [0], "density": [1.0], "test_acc": [0.5]})
    assert run_pbp_analyses(study_record({}), df, tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_figure4_selects_the_smallest_recertified_bound_per_cell(tmp_path):
    grid, df = pbp_results()
    study = study_record(grid)
    written = run_pbp_analyses(study, df, tmp_path / "out")
    names = sorted(p.name for p in written)
    assert names == ["pbp_bound_vs_sparsity.png", "pbp_certified.csv"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in written)
    table = pd.read_csv(tmp_path / "out" / "pbp_certified.csv")
    assert len(table) == 4  # one row per (α, sparsity) cell
    assert (table["grid_size_K"] == 8).all()
    final = df[df["stage"] == 3]
    for row in table.itertuples():
        cell = final[(final["config/pbp.alpha"] == row.alpha) & (final["config/pbp.sparsity"] == row.sparsity_target)]
        recert = [certify(r.cert_emp_risk_mc, 100, r.cert_kl, r.cert_n, form="theorem1", grid_size=8).bound
                  for r in cell.itertuples()]
        assert row.bound_K == pytest.approx(min(recert), rel=1e-12)
        assert row.bound_K > row.bound  # the union bound over K = 8 costs something
        assert row.bound_kl_K <= row.bound_K
    # a smaller δ tightens nothing
    looser = certified_pbp_table(study, df, delta=0.01)
    assert (looser["bound_K"].to_numpy() > table["bound_K"].to_numpy()).all()


def test_pbp_selection_refuses_a_space_without_a_declared_grid():
    grid, df = pbp_results()
    for broken in ({"study": {}}, {**study_record(grid), "grid_size": None}, {"grid": grid}):
        with pytest.raises(NonFiniteSpaceError, match="refused"):
            certified_pbp_table(broken, df)


def test_pbp_selection_refuses_two_certificates_for_one_grid_point():
    grid, df = pbp_results()
    again = df[df["trial_id"] == "t3"].assign(trial_id="t3-repeat")  # the same configuration run twice
    with pytest.raises(StudyError, match="share a grid point"):
        certified_pbp_table(study_record(grid), pd.concat([df, again], ignore_index=True))


def test_figure1_pft_vs_baseline(tmp_path):
    rows = []
    for i, (crit, s, seed) in enumerate(itertools.product(["magnitude", "snip", "random"], [0.5, 0.9], [0, 1])):
        base = {"trial_id": f"t{i}", "config/pbp.init_criterion": crit, "config/pbp.sparsity": s, "config/seed": seed,
                "mode": "pft"}
        rows.append({**base, "level": 0, "stage": 1, "density": 1.0, "test_acc": 0.9})
        rows.append({**base, "level": 2, "stage": 3, "density": 1 - s, "test_acc": 0.8, "test_acc_pft": 0.8 - 0.1 * s,
                     "test_acc_baseline": 0.75 - 0.2 * s})
    grid = {"pbp.init_criterion": ["magnitude", "snip", "random"], "pbp.sparsity": [0.5, 0.9], "seed": [0, 1]}
    written = run_pbp_analyses(study_record(grid, {"mode": "pft"}), pd.DataFrame(rows), tmp_path)
    assert [p.name for p in written] == ["pft_vs_baseline.png"]
    assert written[0].stat().st_size > 0


def test_figure2_right_tabulates_every_trial_network_and_variance(tmp_path):
    import json

    rows = []
    for seed, s in itertools.product([0, 1], [0.5, 0.9]):
        drops = {"dense": [0.01, 0.3], "baseline": [0.0, 0.1 + seed * 0.02], "pft": [0.0, 0.05]}
        rows.append({"trial_id": f"s{seed}_{s}", "config/seed": seed, "config/pbp.sparsity": s, "mode": "pft",
                     "stage": 3, "level": 2, "density": 1 - s, "test_acc_pft": 0.9, "test_acc_baseline": 0.85,
                     "noise_variances": json.dumps([1e-4, 1e-2]),
                     **{f"noise_drop_{k}": json.dumps(v) for k, v in drops.items()},
                     **{f"noise_clean_acc_{k}": 0.9 for k in drops}})
    df = pd.DataFrame(rows)
    study = study_record({"seed": [0, 1], "pbp.sparsity": [0.5, 0.9]}, {"mode": "pft"})
    written = {p.name for p in run_pbp_analyses(study, df, tmp_path)}
    assert {"noise_robustness.png", "noise_robustness.csv", "pft_vs_baseline.png"} <= written
    table = pd.read_csv(tmp_path / "noise_robustness.csv")
    assert len(table) == 4 * 3 * 2  # trials × networks × variances
    at = table[(table["network"] == "baseline") & (table["variance"] == 1e-2) & (table["sparsity_target"] == 0.9)]
    assert sorted(at["drop"]) == pytest.approx([0.10, 0.12])
    assert set(table["criterion"]) == {"magnitude"}  # the study's constant criterion
