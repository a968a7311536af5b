"""The adapters of ``lth_tune.runs.metrics``: every flatness and bound setting a study file can write reaches
the measurement (issue: settings that were read with ``getattr`` on ``Any`` and could not be set)."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from torch import nn

from lth_tune.config import load_study
from lth_tune.data import DataBundle, Split
from lth_tune.flatness import measure_flatness
from lth_tune.models import build_model
from lth_tune.pacbayes import certify_ticket
from lth_tune.pruning import attach_masks, prune_step, trainable_parameters
from lth_tune.runs.metrics import flatness_metrics, ticket_bound_metrics

from ..flatness.nets import classification_data, pruned_mlp


def _study(tmp_path, section: str, body: str):
    text = f"name: probe\nexperiment:\n  {section}:\n" + textwrap.indent(textwrap.dedent(body), "    ")
    path = tmp_path / "probe.yaml"
    path.write_text(text)
    return load_study(path).experiment


def _bundle(x, y) -> DataBundle:
    split = Split(x, y)
    return DataBundle(train=split, val=split, test=split, num_classes=int(y.max()) + 1,
                      input_shape=tuple(x.shape[1:]), augment=False, noisy=torch.zeros(len(y), dtype=torch.bool))


def _numbers(out: dict) -> dict:
    return {k: v for k, v in out.items() if not k.endswith("seconds")}


def test_flatness_settings_from_yaml_reach_the_measurement(tmp_path):
    cfg = _study(tmp_path, "flatness", """
        levels: last
        method: pyhessian
        trace_iters: 4
        tol: 1.0e-9
        eig_iters: 3
        top_n: 2
        landscape: true
        landscape_radius: 0.5
        landscape_points: 5
        sharpness_sigma: 0.01
        sharpness_samples: 3
        n_batches: 1
        batch_size: 32
    """).flatness
    model = pruned_mlp()
    x, y = classification_data()
    out = flatness_metrics(model, _bundle(x, y), cfg, seed=11)
    assert out["hessian_trace_probes"] == 4                          # trace_iters with a tolerance never met
    assert "hessian_top_eig_2" in out and "hessian_top_eig_3" not in out  # top_n
    assert json.loads(out["landscape_alphas"]) == [-0.5, -0.25, 0.0, 0.25, 0.5]  # radius, points
    direct = measure_flatness(model, nn.CrossEntropyLoss(), (x, y), method="pyhessian", trace_iters=4, tol=1e-9,
                              eig_iters=3, top_n=2, landscape=True, landscape_alphas=[-0.5, -0.25, 0.0, 0.25, 0.5],
                              sharpness_sigma=0.01, sharpness_samples=3, n_batches=1, batch_size=32, seed=11)
    assert _numbers(out) == _numbers(direct)
    # each of eig_iters, sharpness_samples, tol changes what is measured
    for change, key in (({"eig_iters": 30}, "hessian_top_eig"), ({"sharpness_samples": 9}, "expected_sharpness"),
                        ({"tol": 0.9}, "hessian_trace_probes")):
        other = flatness_metrics(model, _bundle(x, y), cfg.model_copy(update=change), seed=11)
        assert other[key] != out[key], change


@pytest.fixture(scope="module")
def ticket():
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(1, 8), num_classes=3, widths=[6])
    attach_masks(model)
    theta_init = {t.name: t.param.detach().clone() for t in trainable_parameters(model)}
    prune_step(model, 0.5, criterion="random", generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    x = torch.randn(64, 1, 8, generator=g)
    y = (x.flatten(1) @ torch.randn(8, 3, generator=g)).argmax(1)
    return model, theta_init, _bundle(x, y)


def test_bound_settings_from_yaml_reach_the_certificate(tmp_path, ticket):
    model, theta_init, data = ticket
    cfg = _study(tmp_path, "bound", """
        levels: last
        prior_sigmas: [0.05, 0.2]
        delta: 0.1
        delta_prime: 0.02
        mc_samples: 8
        steps: 6
        batch_size: 16
        lr: 0.3
    """).bound
    out = ticket_bound_metrics(model, theta_init, data, cfg, seed=4)
    direct = certify_ticket(model, theta_init, data.train.x, data.train.y, prior_sigmas=[0.05, 0.2], delta=0.1,
                            delta_prime=0.02, mc_samples=8, steps=6, batch_size=16, lr=0.3, seed=4,
                            test=(data.test.x, data.test.y))
    out.pop("bound_time_s"), direct.pop("bound_time_s")
    assert out == direct
    assert out["ss_grid_size"] == 2 and out["ss_m"] == 8 and out["ss_delta"] == 0.1
    # the Adam steps' lr and batch size (unreachable before) move the optimised posterior
    for change in ({"lr": 0.01}, {"batch_size": 64}):
        other = ticket_bound_metrics(model, theta_init, data, cfg.model_copy(update=change), seed=4)
        assert any(other[f"{p}_sp{j}_sigma_q_mean"] != out[f"{p}_sp{j}_sigma_q_mean"]
                   for p in ("ss", "gauss") for j in range(2)), change
