"""Certificates: Monte-Carlo sample convergence, the bound at R_up, union bound, recertify."""

import dataclasses
import json
import math

import pytest

from lth_tune.pacbayes.certificate import Certificate, certify, recertify, sample_convergence_bound
from lth_tune.pacbayes.kl import kl_inverse_upper
from lth_tune.pacbayes.theorems import kl_bound, theorem1_bound

BASE = {"emp_risk_mc": 0.04, "m": 150, "kl": 800.0, "n": 24000}


def test_certify_manual_computation_kl_form():
    c = certify(**BASE, delta=0.05, delta_prime=0.01)
    r_up = kl_inverse_upper(0.04, math.log(2 / 0.01) / 150)
    eps = (800.0 + math.log(2 * math.sqrt(24000) / 0.05)) / 24000
    assert c.risk_upper == r_up
    assert c.epsilon == pytest.approx(eps, rel=1e-15)
    assert c.bound == kl_inverse_upper(r_up, eps)
    assert c.risk_upper > c.emp_risk_mc and c.bound > c.risk_upper
    assert c.form == "kl" and c.grid_size == 1 and c.delta_eff == 0.05 and c.delta_prime_eff == 0.01


def test_certify_theorem1_form_and_ordering():
    c1 = certify(**BASE, form="theorem1")
    assert c1.bound == theorem1_bound(c1.risk_upper, 800.0, 24000, 0.05)
    assert c1.bound >= certify(**BASE, form="kl").bound


@pytest.mark.parametrize("form", ["kl", "theorem1"])
def test_union_bound_over_grid(form):
    single = certify(**BASE, form=form)
    k = 12
    grid = certify(**BASE, form=form, grid_size=k)
    assert grid.bound > single.bound and grid.risk_upper > single.risk_upper
    # equals a manual computation at (δ/K, δ′/K)
    r_up = kl_inverse_upper(0.04, math.log(2 * k / 0.01) / 150)
    fn = kl_bound if form == "kl" else theorem1_bound
    assert grid.risk_upper == r_up
    assert grid.bound == fn(r_up, 800.0, 24000, 0.05 / k)
    assert grid.delta_eff == pytest.approx(0.05 / k) and grid.delta_prime_eff == pytest.approx(0.01 / k)
    # ... i.e. equals an ungridded certificate at the divided levels
    manual = certify(**BASE, form=form, delta=0.05 / k, delta_prime=0.01 / k)
    assert manual.bound == pytest.approx(grid.bound, rel=1e-15)
    # confidence accounting: the overall level stays 1 − δ − δ′
    assert grid.confidence == single.confidence == pytest.approx(0.94)
    # larger grids are looser
    assert certify(**BASE, form=form, grid_size=100).bound > grid.bound


def test_weighted_union_bound():
    weights = [0.5, 0.25, 0.125, 0.125]
    c = certify(**BASE, prior_weight=0.25, grid_weights=weights)
    assert c.grid_size == 4 and c.grid_weights == tuple(weights) and c.prior_weight == 0.25
    assert c.delta_eff == pytest.approx(0.05 * 0.25) and c.delta_prime_eff == pytest.approx(0.01 * 0.25)
    # uniform weights 1/K reproduce the K-grid
    assert certify(**BASE, prior_weight=0.25).bound == pytest.approx(
        certify(**BASE, grid_size=4).bound, rel=1e-15
    )
    # a heavier weight gives a tighter bound
    assert certify(**BASE, prior_weight=0.5, grid_weights=weights).bound < c.bound
    with pytest.raises(ValueError, match="sum to <= 1"):
        certify(**BASE, prior_weight=0.5, grid_weights=[0.5, 0.4, 0.2])
    with pytest.raises(ValueError, match="not one of"):
        certify(**BASE, prior_weight=0.3, grid_weights=weights)
    with pytest.raises(ValueError, match="without prior_weight"):
        certify(**BASE, grid_weights=weights)
    with pytest.raises(ValueError, match="disagrees"):
        certify(**BASE, prior_weight=0.25, grid_weights=weights, grid_size=7)
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="prior_weight"):
            certify(**BASE, prior_weight=bad)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"form": "theorem1", "grid_size": 30},
        {"prior_weight": 0.125, "grid_weights": [0.5, 0.25, 0.125, 0.125]},
        {"delta": 0.01, "delta_prime": 0.001},
    ],
)
def test_recertify_reproduces_and_dict_roundtrip(kwargs):
    c = certify(**BASE, **kwargs)
    assert recertify(c) == c
    d = c.to_dict()
    json.dumps(d)  # plain Python types only
    assert set(d) == {f.name for f in dataclasses.fields(Certificate)}
    assert Certificate.from_dict(d) == c
    assert recertify(Certificate.from_dict(json.loads(json.dumps(d)))) == c


def test_recertify_overrides():
    c = certify(**BASE)
    assert recertify(c, m=10 * c.m).bound < c.bound  # more sampled networks: tighter
    assert recertify(c, grid_size=50).bound > c.bound
    assert recertify(c, delta=0.01).bound > c.bound
    assert recertify(c, delta_prime=0.001).risk_upper > c.risk_upper
    assert recertify(c, form="theorem1") == certify(**BASE, form="theorem1")
    w = certify(**BASE, prior_weight=0.5)
    with pytest.raises(ValueError, match="grid_size"):
        recertify(w, grid_size=3)


def test_certificate_is_frozen():
    c = certify(**BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.bound = 0.0  # type: ignore[misc]


def test_sample_convergence_bound():
    assert sample_convergence_bound(0.1, 1000, 0.01) == kl_inverse_upper(0.1, math.log(200) / 1000)
    assert sample_convergence_bound(0.0, 10, 0.01) == pytest.approx(
        -math.expm1(-math.log(200) / 10), rel=1e-14
    )
    assert sample_convergence_bound(1.0, 10, 0.01) == 1.0


def test_zero_mc_risk_and_huge_kl_edge_cases():
    c = certify(0.0, 1000, 0.0, 1000)
    assert 0.0 < c.risk_upper < c.bound < 1.0
    assert certify(0.1, 10, 1e9, 1000).bound == 1.0  # vacuous but well defined
    assert certify(0.1, 10, math.inf, 1000, form="theorem1").bound == math.inf


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.0}, "delta"),
        ({"delta_prime": 0.0}, "delta_prime"),
        ({"delta_prime": -0.1}, "delta_prime"),
        ({"delta": 0.6, "delta_prime": 0.4}, r"delta \+ delta_prime"),
        ({"grid_size": 0}, "grid_size"),
        ({"grid_size": 2.5}, "grid_size"),
        ({"n": 0}, "n"),
        ({"n": -3}, "n"),
        ({"m": 0}, "m"),
        ({"m": 2.5}, "m"),
        ({"emp_risk_mc": 1.01}, "emp_risk_mc"),
        ({"emp_risk_mc": -0.01}, "emp_risk_mc"),
        ({"kl": -1.0}, "kl"),
        ({"kl": math.nan}, "kl"),
        ({"form": "catoni"}, "form"),
    ],
)
def test_invalid_inputs_raise(kwargs, match):
    args = {**BASE, **kwargs}
    with pytest.raises(ValueError, match=match):
        certify(args.pop("emp_risk_mc"), args.pop("m"), args.pop("kl"), args.pop("n"), **args)
