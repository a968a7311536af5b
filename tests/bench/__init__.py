"""Tests of the benchmark scripts in ``bench/`` (scripts, not a package: :func:`load_bench` imports one)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def load_bench(script: str) -> Iterator[ModuleType]:
    """``bench/<script>`` as a module, registered in ``sys.modules`` while in use (dataclasses need that); for a
    fixture: ``yield from load_bench("throughput.py")``."""
    spec = importlib.util.spec_from_file_location(f"bench_{Path(script).stem}", BENCH_DIR / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)
