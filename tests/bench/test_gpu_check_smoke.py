"""``bench/gpu_check.py --smoke``: every part of the GPU check (CUDA tests, training throughput, packed trials through
the real sweep on synthetic CIFAR-10 with fractional GPU requests) runs on a CPU and gives its summary table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_smoke_runs_every_part_on_a_cpu(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out))
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--smoke"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1500, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "gpu-check on CPU (--smoke)" in proc.stdout
    result = json.loads((out / "gpu_check.json").read_text())
    tests = result["tests"]
    assert tests["failed"] == 0 and "tests/test_lock.py" in tests["selected"]
    assert "tests/training/test_cuda_steps.py" in tests["selected"]  # found by its skipif, with the others
    assert any("test_augment.py::" in t for t in tests["selected"])
    assert [r["workload"] for r in result["training"]] == ["resnet20_cifar", "vgg16_cifar"]
    assert all(r["ratio"] > 0 and r["of_floor"] > 0 for r in result["training"])
    single, packed = result["packing"]["runs"]
    assert (single["gpu"], packed["gpu"]) == (1.0, 0.25)
    assert single["trials"] == packed["trials"] == 4 and single["errors"] == packed["errors"] == 0
    assert result["packing"]["gain"] > 0
    checks = [r["check"] for r in result["summary"]]
    assert any(c.startswith("CUDA tests") for c in checks) and any("4 trials on 1 GPU" in c for c in checks)
    assert all(r["verdict"].startswith("smoke") for r in result["summary"])
