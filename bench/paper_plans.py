"""The cost of every paper-scale study (``search_spaces/paper/*.yaml``) on A100-class GPUs, from ``lth-tune plan``.

    python bench/paper_plans.py                  # a Markdown table (docs/scaling.md)
    python bench/paper_plans.py --write-headers  # refresh the "# plan:" lines of the study files' headers

Seconds per epoch on one A100-class GPU are *assumed* (fp32, batch 128, data resident on the GPU: the tool's
own input pipeline), not measured here: no GPU was lent to the session that wrote this. ``make gpu-check``
times the real step on a GPU; re-run with ``--seconds resnet20=S`` etc. to replace an assumption.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lth_tune.config import load_study
from lth_tune.runs.plan import plan_study

#: assumed seconds per epoch on one A100-class GPU (see the module docstring)
A100_SECONDS = {"resnet20": 6.0, "vgg16": 10.0, "mlp": 1.0, "lenet5": 1.5, "lenet_300_100": 0.8, "conv1d": 0.5}
HEADER = re.compile(r"^# (PLAN|plan: .*)$", re.MULTILINE)


def plans(seconds: dict[str, float]):
    for path in sorted((ROOT / "search_spaces" / "paper").glob("*.yaml")):
        study = load_study(path)
        yield path, plan_study(study, seconds_by_model=seconds, time_it=False)


def header(plan) -> str:
    w = plan.work
    return (f"# plan: {plan.trials} trials, {w.trainings:,} level trainings, {w.epochs:,.0f} epochs "
            f"(+{w.measure_epochs:,.0f} epoch-equivalents of measurements), checkpoints {_size(w.checkpoint_bytes)}; "
            f"≈{plan.exclusive_hours:,.0f} A100-hours one trial a GPU, ≈{plan.packed_hours:,.0f} packed "
            f"{plan.per_gpu} a GPU at an assumed {plan.packing_gain:g}× gain (lth-tune plan FILE; bench/paper_plans.py)")


def _size(n: float) -> str:
    from lth_tune.runs.plan import _size as size

    return size(n)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-headers", action="store_true")
    ap.add_argument("--seconds", action="append", default=[], metavar="MODEL=S",
                    help="replace an assumed seconds-per-epoch, e.g. resnet20=4.2")
    args = ap.parse_args(argv)
    seconds = dict(A100_SECONDS)
    for item in args.seconds:
        model, value = item.split("=")
        seconds[model] = float(value)
    rows = [("| study | trials | level trainings | epochs (+ measurements) | checkpoints | A100-hours (1 a GPU) | "
             "packed |"), "|---|---|---|---|---|---|---|"]
    for path, plan in plans(seconds):
        w = plan.work
        rows.append(f"| `{path.name}` | {plan.trials} | {w.trainings:,} | {w.epochs:,.0f} (+{w.measure_epochs:,.0f}) | "
                    f"{_size(w.checkpoint_bytes)} | {plan.exclusive_hours:,.0f} | {plan.packed_hours:,.0f} "
                    f"({plan.per_gpu} a GPU) |")
        if args.write_headers:
            text = path.read_text()
            if not HEADER.search(text):
                raise SystemExit(f"{path}: no '# PLAN' / '# plan:' line in its header")
            path.write_text(HEADER.sub(header(plan), text, count=1))
    print("\n".join(rows))
    print("\nassumed seconds per epoch on one A100: " + ", ".join(f"{m} {s:g}" for m, s in seconds.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
