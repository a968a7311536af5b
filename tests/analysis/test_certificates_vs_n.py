"""Certificates against n: per size, the best candidate certified at δ/K over the whole declared grid."""

import pytest

from analysis.certificates_vs_n import certificates_vs_n, run_size_analyses
from lth_tune.pacbayes import certify

from .test_selection import SIGMAS, _record, _results


def test_one_certified_row_per_size_and_formulation(tmp_path):
    df = _results()
    df["config/data.num_samples"] = df["config/train.lr"].map({0.01: 1000, 0.03: 1000, 0.1: 9000})
    grid = {"data.num_samples": [1000, 9000], "train.lr": [0.01, 0.03, 0.1]}
    record = _record(grid=grid)
    table = certificates_vs_n(record, df)
    assert sorted(table["generated"].unique()) == [1000, 9000]
    K = 6 * len(SIGMAS)  # every certificate pays for the whole declared grid, not its size's share
    assert (table["K"] == K).all()
    for _, row in table.iterrows():
        prefix = "ss" if row["formulation"].startswith("spike") else "gauss"
        sub = df[(df["config/data.num_samples"] == row["generated"]) & (df["level"] == 2)]
        best = min(certify(r[f"{prefix}_sp{j}_emp_risk_mc"], 100, r[f"{prefix}_sp{j}_kl"], 5000, delta=0.05,
                           delta_prime=0.01, form="kl", grid_size=K).bound
                   for _, r in sub.iterrows() for j in range(len(SIGMAS)))
        assert row["certified_bound"] == pytest.approx(best, rel=1e-12)
    written = run_size_analyses(record, df, tmp_path)
    assert {p.name for p in written} == {"certificates_vs_n.csv", "certificates_vs_n.md", "certificates_vs_n.png"}


def test_no_size_axis_no_table():
    assert certificates_vs_n(_record(), _results()).empty
