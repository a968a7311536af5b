"""Claims of the papers judged from synthetic studies with known answers, and the HTML report."""

import json

import pandas as pd

from analysis.claims import evaluate_claims
from analysis.html_report import write_reports
from lth_tune.cli import main

from .test_tickets import results, study

GRID = {"train.lr": [0.01, 0.1], "seed": [0, 1, 2, 3]}


def verdicts(df, grid=GRID, ctx=None):
    return {c.key: v for c, v in evaluate_claims(study(grid), df, ctx)}


def test_small_lr_wins_large_lr_fails_and_is_unstable():
    v = verdicts(results())
    assert v["small_lr_wins"].verdict == "supported"
    assert "better" in v["small_lr_wins"].evidence
    assert v["large_lr_fails"].verdict == "supported"
    assert "difference 0.090" in v["large_lr_fails"].evidence  # 0.10 − 0.01 at level 3 (seed terms cancel)
    assert v["large_lr_unstable"].verdict == "supported"
    for key in ("l2_init_rescues", "sam_flatter", "ss_tighter", "pbp_non_vacuous", "pft_beats_one_shot"):
        assert v[key].verdict == "not testable"


def test_the_opposite_measurement_contradicts():
    df = results()
    swap = {0.01: 0.1, 0.1: 0.01}
    df["config/train.lr"] = df["config/train.lr"].map(swap)
    df["trial_id"] = df["trial_id"] + "x"
    v = verdicts(df)
    assert v["large_lr_fails"].verdict == "contradicted"
    assert v["large_lr_unstable"].verdict == "contradicted"


def test_equal_drops_are_not_distinguishable():
    df = results()
    small = df[df["config/train.lr"] == 0.01]
    df = pd.concat([small, small.assign(**{"config/train.lr": 0.1, "trial_id": small["trial_id"] + "b"})])
    assert verdicts(df)["large_lr_fails"].verdict == "not distinguishable"


def test_l2_init_narrows_the_drop():
    df = results()
    large = df[(df["config/train.lr"] == 0.1) & (df["branch"] == "ticket")]
    helped = large.copy()
    helped["test_acc"] = helped["test_acc"] + 0.08 * (helped["level"] == 3)
    helped["trial_id"] = helped["trial_id"] + "-l2"
    df = pd.concat([df.assign(**{"config/regularizer.lam": 0.0}), helped.assign(**{"config/regularizer.lam": 1e-3})])
    grid = {**GRID, "regularizer.lam": [0.0, 1e-3]}
    v = {c.key: v for c, v in evaluate_claims(study(grid, regularizer={"kind": "l2_init"}), df)}
    assert v["l2_init_rescues"].verdict == "supported", v["l2_init_rescues"].evidence
    assert v["l2_norm_does_not"].verdict == "not testable"


def write_experiment(root, df, grid=GRID):
    exp = root / "exp"
    exp.mkdir()
    record = study(grid)
    record["study"].update(name="synthetic", description="known answers")
    record.update(source="synthetic.yaml", num_trials=8)
    (exp / "study.json").write_text(json.dumps(record))
    df.to_csv(exp / "results.csv", index=False)
    pd.DataFrame({"trial_id": df["trial_id"].unique(), "trial_name": df["trial_id"].unique(),
                  "status": "TERMINATED", "levels": 4, "error": ""}).to_csv(exp / "trials.csv", index=False)
    return exp


def test_report_is_one_self_contained_page(tmp_path):
    exp = write_experiment(tmp_path, results())
    (page,) = write_reports([exp])
    text = page.read_text()
    assert page == exp / "report.html"
    assert "<h1>synthetic</h1>" in text and "known answers" in text
    assert text.count("class='supported'") >= 3  # small lr wins, large lr fails, instability
    assert text.count("data:image/png;base64,") >= 3 and "src=\"tickets_vs_controls" not in text
    assert "<table>" in text and "8 trials" in text and "&quot;verdict&quot;" in text  # tables and the config
    assert "claims this study cannot test" in text


def test_report_command(tmp_path, capsys):
    exp = write_experiment(tmp_path, results())
    assert main(["report", str(exp)]) == 0
    assert f"report: {exp / 'report.html'}" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "not an lth-tune experiment" in err and err.count("\n") == 1


def pft_noise_results(dense, baseline, pft):
    """Four PFT trials whose mean drops over the v² grid are ``dense`` / ``baseline`` / ``pft`` ± a trial offset."""
    rows = []
    for i, jitter in enumerate([0.0, 0.01, -0.01, 0.005]):
        rows.append({"trial_id": f"t{i}", "config/seed": i, "mode": "pft", "stage": 3, "level": 2, "density": 0.1,
                     "test_acc_pft": 0.8, "test_acc_baseline": 0.8, "noise_variances": json.dumps([1e-3, 1e-1]),
                     **{f"noise_drop_{tag}": json.dumps([0.0, 2 * (v + jitter)])
                        for tag, v in (("dense", dense), ("baseline", baseline), ("pft", pft))}})
    study = {"study": {"experiment": {"kind": "pbp", "seed": 0, "pbp": {"mode": "pft", "sparsity": 0.9,
                                                                         "init_criterion": "magnitude"}}},
             "grid": {"seed": [0, 1, 2, 3]}, "grid_size": 4}
    return study, pd.DataFrame(rows)


def test_weight_noise_claims_follow_the_measured_drops():
    judge = lambda study, df: {c.key: v for c, v in evaluate_claims(study, df)}
    v = judge(*pft_noise_results(dense=0.30, baseline=0.20, pft=0.10))
    assert v["pruned_more_robust"].verdict == "supported" and "over 4 runs" in v["pruned_more_robust"].evidence
    assert v["pft_more_robust"].verdict == "supported"
    v = judge(*pft_noise_results(dense=0.10, baseline=0.20, pft=0.20))
    assert v["pruned_more_robust"].verdict == "contradicted"
    assert v["pft_more_robust"].verdict == "not distinguishable"  # equal drops, differences all 0
    v = judge(pft_noise_results(dense=0.1, baseline=0.1, pft=0.1)[0], pd.DataFrame({"stage": [3]}))
    assert v["pruned_more_robust"].verdict == "not testable"
