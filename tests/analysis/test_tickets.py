"""Winning-ticket verdicts, controls and instability tables from synthetic results with known answers."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.tickets import control_table, instability_table, run_ticket_analyses, verdict_table
from lth_tune.config import ExperimentConfig
from lth_tune.stats import mean_ci


def study(grid, **experiment):
    """A study.json record: the full default experiment (as `lth-tune sweep` writes it) with ``experiment``
    keys replaced, ε = 0.02."""
    size = int(np.prod([len(v) for v in grid.values()]))
    exp = ExperimentConfig().model_dump(mode="json")
    for key, value in experiment.items():
        exp[key] = {**exp[key], **value} if isinstance(value, dict) else value
    return {"study": {"experiment": exp, "verdict": {"epsilon": 0.02, "confidence": 0.95}},
            "grid": grid, "grid_size": size}


def results():
    """Two learning rates × 4 seeds, levels 0–3 (density 1, .8, .64, .51), controls at level 3.

    lr 0.01: drop 0.01 at every level, ticket beats both controls by 0.10 at level 3.
    lr 0.1:  drop grows 0.0 / 0.01 / 0.05 / 0.10, ticket equal to reinit ± noise, 0.05 above random_prune.
    """
    rows = []
    noise = {0: 0.004, 1: -0.003, 2: 0.001, 3: -0.002}
    for lr in (0.01, 0.1):
        for seed in range(4):
            e = noise[seed]
            dense = 0.80 + e
            drops = [0.0, 0.01, 0.01, 0.01] if lr == 0.01 else [0.0, 0.01, 0.05, 0.10]
            for level, drop in enumerate(drops):
                base = {"trial_id": f"t{lr}-{seed}", "config/train.lr": lr, "config/seed": seed, "level": level,
                        "density": 0.8 ** level}
                acc = dense - drop - (e if level else 0) + (0.002 * seed if level else 0)
                rows.append({**base, "branch": "ticket", "test_acc": acc, "dist_init": 1.0 + level,
                             "instability_barrier": (0.01 if lr == 0.01 else 0.2) + 0.001 * seed,
                             "init_path_barrier": 0.0})
                if level == 3:
                    reinit = acc - 0.10 if lr == 0.01 else acc + (0.004 if seed % 2 else -0.004)
                    rows.append({**base, "branch": "reinit", "test_acc": reinit})
                    rows.append({**base, "branch": "random_prune", "test_acc": acc - (0.10 if lr == 0.01 else 0.05)
                                 - 0.001 * seed})
    return pd.DataFrame(rows)


def test_verdicts_name_the_sparsest_winning_level_and_compare_controls():
    grid = {"train.lr": [0.01, 0.1], "seed": [0, 1, 2, 3]}
    table = verdict_table(study(grid), results(), epsilon=0.02, confidence=0.95).set_index("configuration")
    small, large = table.loc["lr=0.01"], table.loc["lr=0.1"]
    assert small["seeds"] == 4 and small["winning_level"] == 3
    assert large["winning_level"] == 1  # the drop 0.05 at level 2 exceeds ε = 0.02
    # per seed: drop + e_s − 0.002·s, and the e_s average to 0
    assert small["winning_drop"].mean == pytest.approx(0.01 - np.mean([0.0, 0.002, 0.004, 0.006]), abs=1e-12)
    assert small["vs_reinit"] == "better" and small["vs_random_prune"] == "better"
    # large lr: controls ran at level 3 only; there the ticket ties reinit and beats random_prune
    assert large["control_level"] == 3
    assert large["vs_reinit"] == "not distinguishable" and large["vs_random_prune"] == "better"


def test_intervals_are_student_t_over_seeds():
    values = [0.71, 0.74, 0.69, 0.73]
    ci = mean_ci(values, 0.95)
    half = stats.t.ppf(0.975, 3) * np.std(values, ddof=1) / math.sqrt(4)
    assert ci.mean == pytest.approx(np.mean(values)) and ci.half_width == pytest.approx(half)
    assert mean_ci([0.5]).text() == "0.500 (1 seed)" and math.isinf(mean_ci([0.5]).half_width)


def test_control_and_instability_tables():
    grid = {"train.lr": [0.01, 0.1], "seed": [0, 1, 2, 3]}
    ctl = control_table(study(grid), results(), confidence=0.95)
    assert list(ctl["level"]) == [3, 3]
    assert ctl.set_index("configuration").loc["lr=0.1", "vs_reinit"] == "not distinguishable"
    inst = instability_table(study(grid), results(), confidence=0.95).set_index(["configuration", "level"])
    assert inst.loc[("lr=0.1", 2), "barrier"].mean == pytest.approx(0.2015)
    assert inst.loc[("lr=0.01", 2), "barrier"].high < inst.loc[("lr=0.1", 2), "barrier"].low


def test_run_writes_tables_and_figures(tmp_path):
    grid = {"train.lr": [0.01, 0.1], "seed": [0, 1, 2, 3]}
    written, tables = run_ticket_analyses(study(grid), results(), tmp_path)
    names = {p.name for p in written}
    assert {"tickets.md", "tickets_verdicts.csv", "tickets_controls.csv", "tickets_instability.csv",
            "tickets_vs_controls.png", "instability.png"} <= names
    text = (tmp_path / "tickets.md").read_text()
    assert "lr=0.01: winning down to density 0.512" in text and "not distinguishable from reinit" in text
    assert tables["epsilon"] == 0.02
