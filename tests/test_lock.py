"""constraints.txt, the lock: exact pins, the installed environment is exactly it, pyproject.toml admits it.

Offline. `make lock-check` (CI) also resolves everything the README and cluster*.yaml install against it
(``.ci/lock.py check``); tests/tune/test_cluster_config.py checks that the cluster installs with it.
"""

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lth_tune.versions import PACKAGES
from tests.locked import lock

ROOT = Path(__file__).resolve().parents[1]
FIX = ("reinstall with `pip install -c constraints.txt -e '.[dev]'` (make setup), or, after `make test` passes "
       "with the new versions, update the lock: .venv/bin/python .ci/lock.py update")


def test_the_lock_pins_exact_versions_of_what_a_run_depends_on():
    pins = lock.read_lock()
    assert not [n for n in pins if lock.UNPINNED.match(n)], "pip, lth-tune and CUDA runtime wheels stay unpinned"
    assert {n for n in PACKAGES if n != "lth-tune"} <= set(pins)  # every version a run records is locked
    assert lock.lock_python() == "3.11"


def test_a_loose_or_repeated_pin_is_refused(tmp_path):
    for text, match in (("ray>=2.60\n", "not an exact pin"), ("ray==2.60.0\nRay==2.60.0\n", "pinned twice"),
                        ("-e .\n", "not an exact pin")):
        (tmp_path / "c.txt").write_text(text)
        with pytest.raises(ValueError, match=match):
            lock.read_lock(tmp_path / "c.txt")


def test_the_environment_is_the_lock():
    """Every distribution lth-tune[dev] needs here, and every locked one installed, has the locked version."""
    pins = lock.read_lock()
    needed, missing = lock.installed_closure(lock.project_requirements(lock.TESTED_EXTRAS))
    assert not missing, f"not installed: {missing}; {FIX}"
    unpinned = sorted(f"{n} {v}" for n, v in needed.items() if n not in pins and not lock.UNPINNED.match(n))
    installed = {lock.canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    differ = sorted(f"{n} {v} installed, {pins[n]} locked" for n, v in installed.items() if n in pins and v != pins[n])
    assert not unpinned and not differ, (
        "the environment is not the one the tests pass with (constraints.txt): "
        + "; ".join(differ + [f"{u} installed but not in the lock" for u in unpinned]) + f". {FIX}")


def test_installed_requirements_are_consistent():
    run = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def test_pyproject_admits_the_lock_and_caps_what_changes_under_it():
    pins = lock.read_lock()
    reqs = lock.project_requirements(("dev", "rdb"))
    refused = [f"{r} refuses the locked {pins[lock.canonicalize_name(r.name)]}" for r in reqs
               if lock.canonicalize_name(r.name) in pins
               and not r.specifier.contains(pins[lock.canonicalize_name(r.name)], prereleases=True)]
    assert not refused, refused
    capped = {lock.canonicalize_name(r.name) for r in reqs if any(s.operator in ("<", "<=") for s in r.specifier)}
    assert {"ray", "optuna", "pyhessian"} <= capped  # Ray's Searcher DeveloperAPI, pickled Optuna state, 0.x


def test_every_install_in_the_readme_uses_the_lock():
    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if re.search(r"\bpip install\b", line)]
    assert lines and all("-c constraints.txt" in line for line in lines), lines
