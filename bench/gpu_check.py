"""The GPU check (``make gpu-check``): on one CUDA GPU, in at most 8 minutes, in the locked environment.

    python bench/gpu_check.py                 # on a machine with a CUDA GPU (what `make gpu-check` runs)
    python bench/gpu_check.py --smoke         # the same code paths on a CPU in a minute or two (a CI test runs it)
    OUT=/some/dir python bench/gpu_check.py   # also writes the summary as $OUT/gpu_check.json

Three parts, then one summary table:

1. **CUDA tests** — the lock check (tests/test_lock.py) and every test that is skipped without CUDA (found by its
   ``skipif(not torch.cuda.is_available())``): masks, PyHessian, datasets and augmentation on the GPU, and
   tests/training/test_cuda_steps.py (a training step never synchronises host and GPU).
2. **Training throughput on the GPU** — ``bench/throughput.py --device cuda`` for ResNet-20 and VGG-16 at batch 128,
   fp32 and bf16: our trainer (dataset resident on the GPU, augmentation on the GPU, channels-last, optional bf16
   autocast) vs the OpenLTH-style loop (``DataLoader`` of PIL transforms, ``num_workers=0``), target >= 3x; and
   ours as a fraction of the compute floor (the same step on batches already in memory): >= 90% means the
   trainer is not input-bound.
3. **Study throughput with packed trials** — the real sweep (:func:`lth_tune.tune.sweep.run_sweep`) of the paper's
   Figure 3 study (search_spaces/paper/l2init_resnet20_cifar10.yaml: ResNet-20, its training settings) on a
   synthetic CIFAR-10 written in torchvision's on-disk format (50,000 training images), 4 trials of 2 epochs each,
   first with ``resources.gpu: 1`` (one trial at a time), then ``gpu: 0.25`` (four at a time):
   trials x epochs per second of ``Tuner.fit`` wall time, target >= 2.5x.

``torch.compile`` is not part of the trainer (no ``train.compile`` key): on the CPU it cost 70-140 s of compilation
per model for about 1.4x (bench/README.md), and it has not been measured on a GPU.

``--smoke`` runs every part on the CPU with tiny sizes: the CUDA tests are collected and skip, the throughput
benchmark runs one step per block, and the packing sweeps run on a Ray cluster that declares one (logical) GPU,
so the fractional-GPU scheduling is exercised while the trials train on the CPU. Its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUDGET_S = 8 * 60
TARGET_TRAIN = 3.0
TARGET_FLOOR = 0.9
TARGET_PACKING = 2.5
PAPER_STUDY = ROOT / "search_spaces" / "paper" / "l2init_resnet20_cifar10.yaml"
WORKLOADS = ("resnet20_cifar", "vgg16_cifar")


# ============================================================================ 1. CUDA tests
def cuda_tests() -> list[str]:
    """Node ids of the tests that skip without CUDA: functions (or modules, via ``pytestmark``) marked
    ``skipif(...cuda...)``."""
    found = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        rel = path.relative_to(ROOT).as_posix()

        def needs_cuda(node: ast.AST) -> bool:
            src = ast.unparse(node)
            return "skipif" in src and "cuda" in src

        module_level = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                           and needs_cuda(n.value) for n in tree.body)
        if module_level:
            found.append(rel)
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test") and any(
                    needs_cuda(d) for d in node.decorator_list):
                found.append(f"{rel}::{node.name}")
    return found


def run_tests(timeout: float) -> dict[str, Any]:
    tests = ["tests/test_lock.py", *cuda_tests()]
    with tempfile.TemporaryDirectory() as d:
        report = Path(d) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *tests]
        start = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
            tail = (proc.stdout + proc.stderr)[-3000:]
        except subprocess.TimeoutExpired:
            return {"tests": len(tests), "error": f"timed out after {timeout:.0f} s", "seconds": timeout}
        counts = {"passed": 0, "failed": 0, "skipped": 0, "cuda_skipped": 0}
        if report.is_file():
            for case in ET.parse(report).getroot().iter("testcase"):
                kinds = {child.tag for child in case}
                outcome = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
                counts[outcome] += 1
                if outcome == "skipped" and not (case.get("classname") or "").startswith("tests.test_lock"):
                    counts["cuda_skipped"] += 1
    return {"selected": tests, **counts, "exit": proc.returncode, "seconds": time.monotonic() - start,
            "tail": tail if proc.returncode else ""}


# ============================================================================ 2. training throughput
def _throughput_module():
    spec = importlib.util.spec_from_file_location("bench_throughput", ROOT / "bench" / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_training(smoke: bool) -> list[dict[str, Any]]:
    tp = _throughput_module()
    if smoke:
        return tp.run(list(WORKLOADS), steps=1, repeats=1, device="cpu", precisions=["fp32"])
    return tp.run(list(WORKLOADS), steps=60, repeats=3, device="cuda", precisions=["fp32", "bf16"])


# ============================================================================ 3. packed trials
def packing_study(root: Path, out: Path, gpu: float, smoke: bool):
    """The paper's Figure 3 study, cut to 4 trials (seeds) of one dense training of 2 epochs on ``root``."""
    from lth_tune.config import StudyConfig, load_study

    raw = load_study(PAPER_STUDY).model_dump(mode="json")
    e = raw["experiment"]
    e["data"].update(root=str(root), download=False)
    e["train"].update(epochs=1 if smoke else 2, milestones=[])
    e["pruning"]["levels"] = 0
    e["controls"]["kinds"] = []
    e["device"] = "cpu" if smoke else "cuda"
    raw["search"].update(sampler="grid", space={"seed": {"choice": [0, 1, 2, 3]}}, num_trials=None, max_concurrent=4)
    raw["resources"].update(gpu=gpu, cpu=1 if smoke else 2, torch_threads=1 if smoke else 2)
    raw["output"].update(dir=str(out), name=f"packing_gpu{gpu:g}")
    return StudyConfig.model_validate(raw)


def run_packing(smoke: bool, workdir: Path) -> dict[str, Any]:
    import pandas as pd
    import ray

    from lth_tune.tune.sweep import run_sweep
    from tests.data.formats import write_cifar10

    def _trust_synthetic_cifar():  # nested, so Ray pickles it by value into every worker
        """torchvision checks the md5 of the real CIFAR files; the synthetic ones only need to exist."""
        import os

        from torchvision.datasets import cifar

        cifar.check_integrity = lambda fpath, md5=None: os.path.isfile(fpath)

    root = workdir / "data"
    write_cifar10(root, per_batch=64 if smoke else 10_000, n_test=64 if smoke else 10_000)
    _trust_synthetic_cifar()
    ray.init(num_cpus=4 if smoke else None, num_gpus=1 if smoke else None, include_dashboard=False,
             logging_level="ERROR", log_to_driver=False,
             runtime_env={"worker_process_setup_hook": _trust_synthetic_cifar, "env_vars": {"OMP_NUM_THREADS": "1"}})
    rows = []
    try:
        for gpu in (1.0, 0.25):
            study = packing_study(root, workdir / "results", gpu, smoke)
            with contextlib.redirect_stdout(sys.stderr):  # the sweep's summary: not part of this check's output
                outcome = run_sweep(study, verbose=0)
            df = pd.read_csv(outcome.experiment_dir / "results.csv")
            trials, epochs = df["trial_id"].nunique(), study.experiment.train.epochs * (study.experiment.pruning.levels + 1)
            fit = outcome.timings["fit"]
            rows.append({"gpu": gpu, "trials": trials, "epochs_per_trial": epochs, "fit_s": fit,
                         "trial_epochs_per_s": trials * epochs / fit, "mean_level_s": float(df["time_s"].mean()),
                         "errors": outcome.num_errors})
    finally:
        ray.shutdown()
    single, packed = rows
    return {"runs": rows, "gain": packed["trial_epochs_per_s"] / single["trial_epochs_per_s"],
            # each trial's own training (+ measurement) time, shared GPU vs alone: how much of the gain is compute
            "compute_gain": 4 * single["mean_level_s"] / packed["mean_level_s"]}


# ============================================================================ summary
def verdict(value: float | None, target: float, smoke: bool) -> str:
    if smoke:
        return "smoke (CPU)"
    if value is None or not math.isfinite(value):
        return "NOT MEASURED"
    return "MET" if value >= target else "not met"


def summary(result: dict[str, Any]) -> list[dict[str, str]]:
    smoke = result["smoke"]
    rows = []
    t = result.get("tests")
    if t is not None:
        if "error" in t:
            rows.append({"check": "CUDA tests + lock", "measured": t["error"], "target": "all pass", "verdict": "FAILED"})
        else:
            ok = t["failed"] == 0 and t["exit"] == 0
            if smoke:
                status = "smoke (CPU): " + ("ran" if ok else "FAILED")
            else:  # on a GPU nothing may skip: a skipped CUDA test did not check what it is there for
                status = "FAILED" if not ok else "PASS" if not t["cuda_skipped"] else \
                    f"FAILED: {t['cuda_skipped']} CUDA tests skipped"
            rows.append({"check": f"CUDA tests + lock ({len(t['selected'])} selected)",
                         "measured": f"{t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped",
                         "target": "all pass, no CUDA test skipped", "verdict": status})
    for r in result.get("training", []):
        rows.append({"check": f"train {r['workload']}: ours / OpenLTH-style loop",
                     "measured": f"{r['ratio']:.2f}x ({r['ours_img_s']:.0f} vs {r['ref_img_s']:.0f} img/s)",
                     "target": f">= {TARGET_TRAIN:g}x", "verdict": verdict(r["ratio"], TARGET_TRAIN, smoke)})
        if "of_floor" in r:
            rows.append({"check": f"train {r['workload']}: ours / compute floor",
                         "measured": f"{r['of_floor']:.0%} (masking {r['masking']:+.1%}, "
                                     f"torch's reparametrisation {r['reparam_masking']:+.1%})",
                         "target": f">= {TARGET_FLOOR:.0%}", "verdict": verdict(r["of_floor"], TARGET_FLOOR, smoke)})
    if "training_error" in result:
        rows.append({"check": "training throughput", "measured": result["training_error"], "target": "",
                     "verdict": "FAILED"})
    p = result.get("packing")
    if p is not None:
        single, packed = p["runs"]
        rows.append({"check": "study: 4 trials on 1 GPU (gpu 0.25) vs 1 at a time",
                     "measured": f"{p['gain']:.2f}x ({packed['trial_epochs_per_s']:.3f} vs "
                                 f"{single['trial_epochs_per_s']:.3f} trial-epochs/s; compute {p['compute_gain']:.2f}x)",
                     "target": f">= {TARGET_PACKING:g}x", "verdict": verdict(p["gain"], TARGET_PACKING, smoke)})
    if "packing_error" in result:
        rows.append({"check": "packed trials", "measured": result["packing_error"], "target": "", "verdict": "FAILED"})
    wall = result["wall_s"]
    rows.append({"check": "wall time of the check", "measured": f"{wall / 60:.1f} min", "target": f"<= {BUDGET_S // 60} min",
                 "verdict": "smoke (CPU)" if smoke else "MET" if wall <= BUDGET_S else "not met"})
    return rows


def format_summary(rows: list[dict[str, str]], device: str) -> str:
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in ("check", "measured", "target", "verdict")}
    line = "  ".join(f"{k:<{widths[k]}}" for k in widths)
    out = [f"gpu-check on {device}", line, "-" * len(line)]
    out += ["  ".join(f"{r[k]:<{widths[k]}}" for k in widths) for r in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="every part on the CPU with tiny sizes (no GPU needed)")
    p.add_argument("--skip", nargs="+", choices=["tests", "training", "packing"], default=[],
                   help="leave parts out (e.g. to rerun one)")
    p.add_argument("--json", default=None, help="also write the summary and the raw numbers here")
    a = p.parse_args(argv)

    import torch

    start = time.monotonic()
    if not a.smoke and not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU visible (on a CPU: python bench/gpu_check.py --smoke)", file=sys.stderr)
        return 2
    device = "CPU (--smoke)" if a.smoke else torch.cuda.get_device_name(0)
    result: dict[str, Any] = {"smoke": a.smoke, "device": device, "torch": torch.__version__}
    if "tests" not in a.skip:
        print("gpu-check 1/3: the lock and the CUDA tests", flush=True)
        result["tests"] = run_tests(timeout=150 if not a.smoke else 300)
    if "training" not in a.skip:
        print("gpu-check 2/3: training throughput (bench/throughput.py)", flush=True)
        try:
            result["training"] = run_training(a.smoke)
        except Exception as err:  # noqa: BLE001 - reported in the table; the other parts still run
            result["training_error"] = f"{err.__class__.__name__}: {err}"[:300]
    if "packing" not in a.skip:
        print("gpu-check 3/3: study throughput, 4 trials packed on one GPU vs one at a time", flush=True)
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as d:
            try:
                result["packing"] = run_packing(a.smoke, Path(d))
            except Exception as err:  # noqa: BLE001
                result["packing_error"] = f"{err.__class__.__name__}: {err}"[:300]
    result["wall_s"] = time.monotonic() - start
    rows = summary(result)
    result["summary"] = rows
    text = format_summary(rows, device)
    print()
    print(text)
    t = result.get("tests") or {}
    if t.get("tail"):
        print("\nCUDA tests output (tail):\n" + t["tail"])
    for target in [a.json, os.path.join(os.environ["OUT"], "gpu_check.json") if os.environ.get("OUT") else None]:
        if target:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            Path(target).write_text(json.dumps(result, indent=1, default=str))
    failed = any(r["verdict"].startswith("FAILED") or r["verdict"].endswith("FAILED") for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
