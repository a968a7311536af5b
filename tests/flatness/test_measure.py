import pytest
from torch import nn

from lth_tune.flatness import exact_trace_and_top_eig, measure_flatness

from .nets import classification_data, pruned_mlp


def test_measure_fast_all_metrics(tmp_path):
    m = pruned_mlp()
    x, y = classification_data()
    ce = nn.CrossEntropyLoss()
    tr, evals, _ = exact_trace_and_top_eig(m, ce, x, y)
    out = measure_flatness(m, ce, (x, y), trace=True, top_eig=True, landscape=True, sharpness_sigma=0.01,
                           sharpness_samples=4, landscape_alphas=[-0.5, 0.0, 0.5], artefacts_dir=tmp_path,
                           method="fast", top_n=2)
    assert out["hessian_trace"] == pytest.approx(tr, rel=1e-5)
    assert out["hessian_trace_se"] == 0.0
    assert out["hessian_top_eig"] == pytest.approx(evals[0], rel=1e-4)
    assert "hessian_top_eig_2" in out
    assert out["landscape_max_increase"] >= 0
    assert (tmp_path / "landscape.csv").exists() and (tmp_path / "landscape.png").exists()
    assert out["landscape_png"] == str(tmp_path / "landscape.png")
    assert {"expected_sharpness", "expected_sharpness_se", "expected_sharpness_sigma"} <= set(out)
    artefacts = {"landscape_csv", "landscape_png", "landscape_alphas", "landscape_losses"}
    assert all(isinstance(v, (int, float)) for k, v in out.items() if k not in artefacts)
    # the curve travels with the results as JSON (Figure 2 is drawn from results.csv)
    import json

    assert json.loads(out["landscape_alphas"]) == [-0.5, 0.0, 0.5]
    losses = json.loads(out["landscape_losses"])
    assert len(losses) == 3 and losses[1] == pytest.approx(out["landscape_loss0"])


def test_measure_pyhessian_subset_and_fallback():
    m = pruned_mlp()
    x, y = classification_data()
    out = measure_flatness(m, nn.CrossEntropyLoss(), (x, y), top_eig=False, method="pyhessian", trace_iters=5,
                           batch_size=32, n_batches=1)
    assert set(out) == {"hessian_trace", "hessian_trace_se", "hessian_trace_probes", "hessian_trace_seconds"}
    assert out["hessian_trace_probes"] <= 5
    with pytest.warns(UserWarning, match="not exact"):
        out = measure_flatness(pruned_mlp(act=nn.Tanh), nn.CrossEntropyLoss(), (x, y), top_eig=False,
                               trace_iters=3)
    assert out["hessian_trace_probes"] > 0
