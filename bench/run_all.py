"""Run every benchmark script in bench/ (``throughput.py``, ``hessian.py``, ...) one after another.

    python bench/run_all.py

Each script runs as a subprocess with its default arguments and the same Python interpreter; its
output goes straight to this terminal. The exit status is non-zero if any benchmark failed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKIP = {"run_all.py", "__init__.py", "gpu_check.py"}  # gpu_check.py: `make gpu-check`, on a GPU


def scripts() -> list[Path]:
    """The benchmark scripts present, throughput.py first, then the others alphabetically."""
    found = [p for p in sorted(HERE.glob("*.py")) if p.name not in SKIP and not p.name.startswith("_")]
    return sorted(found, key=lambda p: (p.name != "throughput.py", p.name))


def main() -> int:
    failed = []
    for script in scripts():
        print(f"=== {script.relative_to(HERE.parent)} ===", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        print(f"=== {script.name}: exit {rc} after {time.perf_counter() - start:.0f}s ===\n", flush=True)
        if rc != 0:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
