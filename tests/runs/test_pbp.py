"""PBP / PFT stages in-process on a tiny MNIST-1D subset: certificate, n, PFT masks, checkpoint/resume."""

import io
import math

import pytest
import torch

from lth_tune.config import ExperimentConfig
from lth_tune.pacbayes import certify, recertify
from lth_tune.runs.pbp import PBPRun, stage_milestones
from lth_tune.runs.setup import load_experiment_data

SUBSET = 600
ALPHA = 0.4


def make_cfg(root, val_fraction=0.0, **pbp):
    base = {"alpha": ALPHA, "sparsity": 0.75, "prior_epochs": 2, "finetune_epochs": 1, "posterior_epochs": 2,
            "prior_lr": 0.05, "posterior_lr": 0.01, "prior_var": math.exp(-7), "mc_samples": 20,
            "eval_samples": 2}
    base.update(pbp)
    return ExperimentConfig.model_validate({
        "kind": "pbp", "seed": 2, "device": "cpu",
        "data": {"dataset": "mnist1d", "root": root, "train_subset": SUBSET, "val_fraction": val_fraction},
        "model": {"name": "mlp", "widths": [32]},   # D = 40·32 + 32·10 = 1600 prunable weights
        "train": {"batch_size": 64},
        "pbp": base,
    })


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.getbasetemp() / "data")


@pytest.fixture(scope="module")
def data(root):
    return load_experiment_data(make_cfg(root), torch.device("cpu"))


@pytest.fixture(scope="module")
def finished(root, data):
    torch.set_num_threads(1)
    run = PBPRun(make_cfg(root), device="cpu", data=data)
    run.run()
    return run


def close(a, b):
    return (isinstance(a, float) and math.isnan(a) and math.isnan(b)) or a == b


def test_three_stages_report_levels_and_names(finished):
    h = finished.history
    assert [m["level"] for m in h] == [0, 1, 2] and [m["stage"] for m in h] == [1, 2, 3]
    assert [m["stage_name"] for m in h] == ["prior_pretrain", "prior_finetune", "posterior"]
    assert h[0]["density"] == 1.0
    for m in h[1:]:
        assert m["expected_density"] == pytest.approx(0.25, abs=0.02)
        for key in ("det_train_err", "det_test_err", "stoch_train_err", "stoch_test_err", "entropy"):
            assert 0.0 <= m[key] <= 1.0
    assert h[2]["test_err_prior"] == h[1]["stoch_test_err"]
    assert h[2]["test_err_posterior"] == h[2]["stoch_test_err"]


def test_n_counts_only_the_bound_split(finished):
    n_prior = round(ALPHA * SUBSET)
    assert len(finished.prior_split) == n_prior == finished.history[0]["n_prior"]
    assert finished.n_bound == SUBSET - n_prior
    cert = finished.certificate
    assert cert.n == SUBSET - n_prior == finished.history[2]["cert_n"]
    assert finished.history[1]["cert_n"] == SUBSET - n_prior  # the prior's own certificate (KL = 0)
    assert finished.history[1]["kl"] == 0.0


def test_certificate_is_finite_ordered_and_recertifies(finished):
    m = finished.history[2]
    cert = finished.certificate
    assert math.isfinite(cert.bound) and cert.form == "theorem1"
    assert cert.bound >= cert.risk_upper >= cert.emp_risk_mc >= 0.0
    assert m["bound"] == cert.bound and m["cert_risk_upper"] == cert.risk_upper
    assert m["bound_kl"] <= m["bound"]  # Theorem 2 is at least as tight
    assert cert.m == 20 and cert.delta == 0.05 and cert.delta_prime == 0.01 and cert.confidence == pytest.approx(0.94)
    assert recertify(cert) == cert
    # the reported columns alone reproduce it
    again = certify(m["cert_emp_risk_mc"], m["cert_m"], m["cert_kl"], m["cert_n"], delta=m["cert_delta"],
                    delta_prime=m["cert_delta_prime"], form="theorem1", grid_size=1)
    assert again.bound == m["bound"]
    assert recertify(cert, grid_size=13).bound > cert.bound
    with torch.no_grad():
        assert float(finished.net.kl(finished.prior)) == pytest.approx(m["kl"], rel=1e-12)
    assert m["kl"] > 0  # the posterior moved


def test_posterior_freezes_biases(finished):
    assert all(not p.requires_grad for p in finished.net.deterministic_parameters())


def test_resume_after_stage_1_and_2_reproduces_uninterrupted_numbers(root, data, finished):
    for stop in (1, 2):
        run = PBPRun(make_cfg(root), device="cpu", data=data)
        for _ in range(stop):
            run.next_stage()
        buf = io.BytesIO()
        torch.save(run.state_dict(), buf)
        buf.seek(0)
        resumed = PBPRun(make_cfg(root), device="cpu", data=data)
        resumed.load_state_dict(torch.load(buf, weights_only=True))
        assert resumed.stage == stop + 1
        resumed.run()
        ref = finished.history[2]
        got = resumed.history[2]
        for key, value in ref.items():
            if key != "time_s":
                assert close(got[key], value), (stop, key, got[key], value)


def test_checkpoint_of_another_config_is_rejected(root, data):
    run = PBPRun(make_cfg(root), device="cpu", data=data)
    other = PBPRun(make_cfg(root, sparsity=0.5), device="cpu", data=data)
    with pytest.raises(ValueError, match="different experiment"):
        other.load_state_dict(run.state_dict())


def test_pft_mask_density_is_one_minus_s_and_baseline_alongside(root, data):
    cfg = make_cfg(root, mode="pft", sparsity=0.75, prior_epochs=1, finetune_epochs=1, init_criterion="snip",
                   mapping="clamp", prior_shape="isotropic")
    run = PBPRun(cfg, device="cpu", data=data)
    hist = run.run()
    assert len(run.prior_split) == len(data.train) and run.n_bound == 0  # α ignored
    assert [m["stage_name"] for m in hist] == ["pretrain", "mask_finetune", "pft_finetune"]
    last = hist[2]
    assert last["density_pft"] == 0.25 == last["density_baseline"] == last["density"]  # 400 of 1600
    for key in ("test_acc_pft", "test_acc_baseline", "train_acc_pft", "train_acc_baseline", "mask_overlap"):
        assert 0.0 <= last[key] <= 1.0
    assert last["test_acc"] == last["test_acc_pft"]
    assert "bound" not in last


def test_random_criterion_and_alpha_zero_prior(root):
    # α = 0: a data-independent prior (stages 1–2 see no data), n = |S|; the input statistics come from the
    # validation split, never from the bound set S
    with pytest.raises(ValueError, match="val_fraction"):
        make_cfg(root, alpha=0.0)
    cfg = make_cfg(root, val_fraction=0.2, alpha=0.0, init_criterion="random", posterior_epochs=1)
    assert cfg.normalization_split == "val"
    run = PBPRun(cfg, device="cpu")
    n = round(0.8 * SUBSET)
    assert torch.allclose(run.data.val.x.mean(), torch.zeros(1), atol=1e-5)  # standardised with val's statistics
    assert not torch.allclose(run.data.train.x.mean(), torch.zeros(1), atol=1e-5)
    hist = run.run()
    assert run.n_bound == n and hist[2]["cert_n"] == n
    assert math.isfinite(hist[2]["bound"])
    with pytest.raises(ValueError, match="snip"):
        PBPRun(make_cfg(root, val_fraction=0.2, alpha=0.0, init_criterion="snip"), device="cpu").run()


def test_stage_milestones():
    assert stage_milestones([0.5, 0.75], 60) == [30, 45]
    assert stage_milestones([0.5], 0) == []
    assert stage_milestones([0.01, 1.0], 10) == [1, 10]


def test_prior_preprocessing_uses_s_p_statistics_only(root, data, finished):
    x = finished.prior_split.x
    assert torch.allclose(x.mean(dim=(0, 2)), torch.zeros(1), atol=1e-5)
    assert torch.allclose(x.std(dim=(0, 2), correction=0), torch.ones(1), atol=1e-5)
    # the shared bundle is untouched and the map is one affine map for every split
    a = (data.test.x - data.train.x[finished_prior_index(root, data)].mean()) / data.train.x[
        finished_prior_index(root, data)].std(correction=0)
    assert torch.allclose(finished.data.test.x, a, atol=1e-5)
    assert not torch.equal(finished.data.test.x, data.test.x)


def finished_prior_index(root, data):
    from lth_tune.data import prior_bound_split

    return prior_bound_split(len(data.train), ALPHA, seed=2)[0]


def test_config_rejects_an_invalid_block_isotropic_epsilon_and_deltas(root):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="epsilon"):
        make_cfg(root, sparsity=0.99, epsilon=0.02)
    with pytest.raises(ValidationError, match="delta"):
        make_cfg(root, delta=0.5, delta_prime=0.5)
    with pytest.raises(ValidationError, match="fractions"):
        make_cfg(root, milestones=[1.5])


def test_pft_measures_weight_noise_robustness_of_dense_one_shot_and_pft(root, data):
    import json

    cfg = make_cfg(root, mode="pft", sparsity=0.75, prior_epochs=1, finetune_epochs=1, noise_variances=[1e-2, 1e-4],
                   noise_draws=2)
    assert cfg.pbp.noise_variances == [1e-4, 1e-2]  # sorted
    last = PBPRun(cfg, device="cpu", data=data).run()[-1]
    assert json.loads(last["noise_variances"]) == [1e-4, 1e-2]
    for tag in ("dense", "baseline", "pft"):
        assert 0.0 < last[f"noise_clean_acc_{tag}"] <= 1.0
        drops = json.loads(last[f"noise_drop_{tag}"])
        assert len(drops) == 2 and all(math.isfinite(d) and d <= 1.0 for d in drops)
    assert last["noise_clean_acc_pft"] == last["train_acc_pft"]  # measured on S, the unperturbed network


def test_noise_variances_are_for_pft_only(root):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="mode: pft"):
        make_cfg(root, noise_variances=[1e-3])
    with pytest.raises(ValidationError, match="noise_variances"):
        make_cfg(root, mode="pft", noise_variances=[0.0])
