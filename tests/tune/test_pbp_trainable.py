"""PBP studies: the shipped study files, and a real Ray Tune + Optuna run of a tiny pbp.yaml-shaped study."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from lth_tune.config import load_study, study_from_dict
from lth_tune.pacbayes import certify

ROOT = Path(__file__).resolve().parents[2]
STUDIES = ["search_spaces/pbp.yaml", "search_spaces/paper/pbp_mnist.yaml",
           "search_spaces/paper/pbp_fashion_mnist.yaml", "search_spaces/paper/pbp_cifar10.yaml"]


@pytest.mark.parametrize("path", STUDIES)
def test_study_files_validate_with_the_d2_prior_variance_grid(path):
    study = load_study(ROOT / path)
    assert study.experiment.kind == "pbp"
    assert (study.search.metric, study.search.mode) == ("bound", "min")
    grid = study.search.grid()
    assert set(grid) >= {"pbp.alpha", "pbp.sparsity", "pbp.prior_var", "pbp.posterior_lr"}
    expected = [math.exp(k) for k in range(-15, -2)]  # σ² = e^k, k = -15..-3 (paper 004 D.2)
    assert grid["pbp.prior_var"] == pytest.approx(expected, rel=1e-9)
    assert study.search.grid_size() == math.prod(len(v) for v in grid.values())


def test_paper_studies_use_the_d2_architectures_and_schedules():
    m = load_study(ROOT / "search_spaces/paper/pbp_mnist.yaml").experiment
    assert (m.data.dataset, m.model.name, m.model.widths) == ("mnist", "mlp", [1000, 1000, 1000])
    assert (m.pbp.prior_lr, m.pbp.prior_epochs, m.pbp.finetune_epochs, m.pbp.posterior_epochs) == (0.01, 30, 30, 30)
    f = load_study(ROOT / "search_spaces/paper/pbp_fashion_mnist.yaml").experiment
    assert (f.data.dataset, f.model.name, f.pbp.prior_epochs, f.pbp.finetune_epochs) == ("fashion_mnist", "lenet5", 70, 30)
    c = load_study(ROOT / "search_spaces/paper/pbp_cifar10.yaml").experiment
    assert (c.data.dataset, c.model.name, c.pbp.prior_lr, c.pbp.prior_epochs, c.pbp.finetune_epochs) == (
        "cifar10", "resnet20", 0.1, 120, 60)
    assert c.pbp.milestones == [0.5, 0.75] and c.data.augment


def tiny_study(tmp_path, data_root):
    raw = {
        "name": "pbp_e2e",
        "experiment": {
            "kind": "pbp", "seed": 1, "device": "cpu",
            "data": {"dataset": "mnist1d", "root": data_root, "train_subset": 600, "val_fraction": 0.0},
            "model": {"name": "mlp", "widths": [32]},
            "train": {"batch_size": 64},
            "pbp": {"alpha": 0.5, "sparsity": 0.75, "prior_epochs": 2, "finetune_epochs": 1, "posterior_epochs": 1,
                    "prior_lr": 0.05, "posterior_lr": 0.01, "mc_samples": 10, "eval_samples": 2},
        },
        "search": {"sampler": "grid", "seed": 0, "max_concurrent": 2, "metric": "bound", "mode": "min",
                   "space": {"pbp.prior_var": {"exponent": [-8, -6], "base": "e", "points": 2}}},
        "resources": {"cpu": 1, "torch_threads": 1},
        "output": {"dir": str(tmp_path / "results")},
    }
    return study_from_dict(raw)


@pytest.mark.e2e
def test_pbp_sweep_reports_every_stage_and_reproduces_in_process_numbers(tmp_path, data_root):
    from lth_tune.runs import PBPRun
    from lth_tune.tune.sweep import run_sweep

    torch.set_num_threads(1)
    study = tiny_study(tmp_path, data_root)
    outcome = run_sweep(study, verbose=0)
    assert outcome.num_errors == 0 and outcome.num_trials == 2
    df = pd.read_csv(outcome.experiment_dir / "results.csv")
    assert len(df) == 2 * 3 and not df.duplicated(["trial_id", "level"]).any()
    assert sorted(df["level"].unique()) == [0, 1, 2]
    assert list(df.sort_values(["trial_id", "level"])["stage_name"][:3]) == ["prior_pretrain", "prior_finetune",
                                                                            "posterior"]
    assert df.loc[df["stage"] == 1, "bound"].isna().all()
    final = df[df["stage"] == 3]
    assert (final["cert_n"] == 300).all() and (final["cert_m"] == 10).all()
    assert (final["bound"] >= final["cert_risk_upper"]).all() and (final["cert_risk_upper"] >= 0).all()
    for row in final.itertuples():
        cert = certify(row.cert_emp_risk_mc, int(row.cert_m), row.cert_kl, int(row.cert_n), delta=row.cert_delta,
                       delta_prime=row.cert_delta_prime, form="theorem1")
        assert cert.bound == pytest.approx(row.bound, rel=1e-12)
    assert json.loads((outcome.experiment_dir / "study.json").read_text())["grid_size"] == 2
    # the trial inside Ray computes exactly what the same configuration computes in-process
    for var, rows in df.groupby("config/pbp.prior_var"):
        ref = PBPRun(study.experiment.with_params({"pbp.prior_var": var}), device="cpu").run()
        rows = rows.sort_values("level").reset_index(drop=True)
        for level, m in enumerate(ref):
            for key in ("density", "test_acc", "bound", "kl", "stoch_test_err"):
                if key in m:
                    assert rows.loc[level, key] == pytest.approx(m[key], rel=1e-6), (var, level, key)
