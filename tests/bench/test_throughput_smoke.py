"""Smoke test of bench/throughput.py: the quick MLP measurement runs and gives sane numbers.

No throughput target is asserted here (timings depend on the machine); see bench/README.md.
"""

from __future__ import annotations

import math
import time

import pytest

from tests.bench import load_bench


@pytest.fixture(scope="module")
def throughput():
    yield from load_bench("throughput.py")


def test_quick_mlp_throughput_is_positive_and_finite(throughput):
    import torch

    threads = torch.get_num_threads()
    start = time.perf_counter()
    results = throughput.run(workloads=["mnist1d_mlp"], steps=5, repeats=2)
    elapsed = time.perf_counter() - start

    assert torch.get_num_threads() == threads  # the benchmark restores the thread setting
    assert [r["workload"] for r in results] == ["mnist1d_mlp"]
    (r,) = results
    for key in ("ours_img_s", "ref_img_s", "ratio", "ours_img_cpu_s", "ref_img_cpu_s"):
        assert math.isfinite(r[key]) and r[key] > 0, (key, r[key])
    assert r["steps"] == 5 and len(r["pair_ratios"]) == 2
    # the floor sides: ours' masking path, no masks, torch's reparametrisation; masking may be slightly negative
    for key in ("floor_img_s", "unmasked_img_s", "reparam_img_s", "of_floor"):
        assert math.isfinite(r[key]) and r[key] > 0, (key, r[key])
    for key in ("masking", "reparam_masking"):
        assert math.isfinite(r[key]) and -1 < r[key] < 1, (key, r[key])
    assert "reparam" in throughput.format_floor(results)
    assert "mnist1d_mlp" in throughput.format_table(results)
    assert elapsed < 20, f"quick benchmark took {elapsed:.1f}s"
