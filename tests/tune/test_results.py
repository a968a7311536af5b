"""The sweep's summary: best configuration by mean over seeds, accuracy-vs-density table."""

import pandas as pd

from lth_tune.tune.results import order_rows, summary


def frame():
    rows = []
    for lr, accs in ((0.01, (0.50, 0.70)), (0.1, (0.65, 0.60))):  # lr 0.01: one lucky seed, worse mean
        for seed, acc in enumerate(accs):
            for level, density in ((0, 1.0), (1, 0.8)):
                rows.append({"trial_id": f"t{lr}{seed}", "level": level, "density": density,
                             "config/train.lr": lr, "config/seed": seed,
                             "val_acc": acc if level == 1 else 0.9, "test_acc": acc - 0.01 * level})
    return pd.DataFrame(rows)


def test_best_configuration_is_chosen_by_the_mean_over_seeds():
    text = summary(frame(), "val_acc", "max", ["train.lr", "seed"])
    first = text.splitlines()[0]
    assert "train.lr=0.1" in first and "0.6250 ± 0.0354 over 2 seeds" in first
    assert "mean over seeds" in text
    table = text.splitlines()[2:]
    assert len(table) == 4  # header + density row label + one row per learning rate
    assert summary(frame(), "val_acc", "min", ["train.lr", "seed"]).splitlines()[0].count("train.lr=0.01") == 1


def test_order_rows_keeps_the_last_report_of_a_level():
    df = pd.DataFrame([{"trial_id": "a", "level": 1, "x": 1}, {"trial_id": "a", "level": 0, "x": 2},
                       {"trial_id": "a", "level": 1, "x": 3}])
    out = order_rows(df)
    assert out["level"].tolist() == [0, 1] and out["x"].tolist() == [2, 3]
