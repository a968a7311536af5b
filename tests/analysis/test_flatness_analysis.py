"""Table 1 / Figure 1 / Figure 2 from synthetic results with known answers."""

import json

import pandas as pd
import pytest

from analysis.flatness import annotate, figure1_label_noise, figure2_landscapes, table1


def study(optimizer, lr=0.01, noise=0.0):
    return {"study": {"experiment": {"train": {"optimizer": optimizer, "lr": lr, "rho": 0.05, "nvrm_b": 0.01},
                                     "data": {"label_noise": noise}, "seed": 0}}, "grid": {}}


def rows(optimizer, hyper_key=None, hypers=(None,), seeds=(0, 1), lrs=(0.01,)):
    out = []
    for h in hypers:
        for s in seeds:
            for lr in lrs:
                for level, density in ((0, 1.0), (10, 0.107)):
                    r = {"trial_id": f"{optimizer}{h}{s}{lr}", "level": level, "density": density,
                         "config/seed": s, "config/train.lr": lr,
                         "test_acc": 0.5 + (h or 0) + 0.01 * s,
                         "hessian_trace": (100.0 if optimizer == "sgd" else 50.0 + 100 * (h or 0)) + s
                         if level == 10 else float("nan"),
                         "landscape_alphas": json.dumps([-1, 0, 1]) if level == 10 else None,
                         "landscape_losses": json.dumps([lr * 10, 0.1, lr * 10]) if level == 10 else None}
                    if hyper_key:
                        r[f"config/{hyper_key}"] = h
                    out.append(r)
    return pd.DataFrame(out)


def test_table1_picks_best_hyper_by_test_accuracy_and_averages_seeds(tmp_path):
    sgd = annotate(study("sgd"), rows("sgd", lrs=(0.01, 0.1)), "sgd")
    sam = annotate(study("sam"), rows("sam", "train.rho", hypers=(0.05, 0.2)), "sam")
    written = table1(pd.concat([sgd, sam]), tmp_path)
    assert written
    wide = pd.read_csv(tmp_path / "table1_hessian_trace.csv", index_col=0)
    assert list(wide.columns) == ["sgd", "sam"]
    # SGD: only the small lr, mean over seeds 0,1 of 100+s; SAM: rho=0.2 has the higher accuracy → 70+s
    assert wide.loc[89.3, "sgd"] == pytest.approx(100.5)
    assert wide.loc[89.3, "sam"] == pytest.approx(70.5)
    assert "rho=0.2" in (tmp_path / "table1_hessian_trace.md").read_text()


def test_figure1_and_figure2_written(tmp_path):
    clean = annotate(study("sgd", noise=0.0), rows("sgd", lrs=(0.01, 0.1)), "clean")
    noisy = annotate(study("sgd", noise=0.3), rows("sgd", lrs=(0.01, 0.1)), "noisy")
    assert figure1_label_noise(pd.concat([clean, noisy]), tmp_path)[0].stat().st_size > 1000
    sam = annotate(study("sam"), rows("sam", "train.rho", hypers=(0.05,)), "sam")
    paths = figure2_landscapes(pd.concat([clean, sam]), tmp_path)
    curves = pd.read_csv(tmp_path / "figure2_landscapes.csv")
    assert set(curves["setting"]) == {"small lr (SGD)", "large lr (SGD)", "small lr + SAM"}
    assert curves[(curves.setting == "large lr (SGD)") & (curves.alpha == 1)]["train_loss"].item() == pytest.approx(1.0)
    assert paths[0].suffix == ".png"


def test_no_flatness_columns_means_no_outputs(tmp_path):
    df = annotate(study("sgd"), rows("sgd").drop(columns=["hessian_trace", "landscape_losses"]), "x")
    assert table1(df, tmp_path) == [] and figure2_landscapes(df, tmp_path) == []
