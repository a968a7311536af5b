"""Linear mode connectivity: interpolation, the error barrier of Frankle et al. (2020) eq. 1, path errors."""

import pytest
import torch
from torch import nn

from lth_tune.data import Split
from lth_tune.flatness import error_barrier, interpolate, linear_path_errors
from lth_tune.pruning import attach_masks, prune_step, snapshot
from lth_tune.training import evaluate


def test_error_barrier_is_the_peak_above_the_endpoint_mean():
    assert error_barrier([0.1, 0.4, 0.3]) == pytest.approx(0.4 - 0.2)
    assert error_barrier([0.2, 0.1, 0.2]) == pytest.approx(0.0)  # a dip: no barrier, the max is an endpoint
    with pytest.raises(ValueError):
        error_barrier([0.3])


def test_interpolate_floats_and_keeps_counters():
    a = {"w": torch.zeros(3), "n": torch.tensor(5)}
    b = {"w": torch.ones(3), "n": torch.tensor(9)}
    mid = interpolate(a, b, 0.25)
    assert torch.allclose(mid["w"], torch.full((3,), 0.25)) and int(mid["n"]) == 5


def test_path_errors_hit_both_endpoints_and_leave_the_model_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    attach_masks(model)
    prune_step(model, 0.5)
    x, y = torch.randn(200, 4), torch.randint(0, 3, (200,))
    a = snapshot(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    b = snapshot(model)
    errors = linear_path_errors(model, a, b, Split(x, y), [0.0, 0.5, 1.0])
    assert snapshot(model).keys() == b.keys() and all(torch.equal(snapshot(model)[k], b[k]) for k in b)
    end = 1 - evaluate(model, Split(x, y))[1]
    assert errors[-1] == pytest.approx(end)
    model.load_state_dict(a, strict=False)
    assert errors[0] == pytest.approx(1 - evaluate(model, Split(x, y))[1])
