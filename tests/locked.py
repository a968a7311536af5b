"""``.ci/lock.py`` (reads and checks constraints.txt, the lock) as a module for the tests."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("lth_tune_lock", Path(__file__).resolve().parents[1] / ".ci" / "lock.py")
lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock)


def works_with(*names: str) -> str:
    """``ray 2.60.0, optuna 5.1.0``: the locked versions of ``names``, for failure messages."""
    pins = lock.read_lock()
    return ", ".join(f"{n} {pins[n]}" for n in names)
