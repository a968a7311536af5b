"""The versions that produce a run: lth-tune, the libraries a study's numbers depend on, and Python.

``lth-tune --version`` prints them, every experiment's ``study.json`` records them, ``--resume`` warns when
they differ from the run it continues, and ``lth-tune analyze`` shows them. Read from the installed
distributions' metadata (nothing is imported), so asking is cheap. The versions the tests pass with are
locked in ``constraints.txt``.
"""

from __future__ import annotations

import importlib.metadata
import platform

#: distributions, in the order they are printed (``python`` follows)
PACKAGES = ("lth-tune", "ray", "optuna", "torch", "torchvision", "pyhessian")
NOT_INSTALLED = "not installed"


def versions() -> dict[str, str]:
    """``{"lth-tune": "0.1.0", "ray": ..., "optuna": ..., "torch": ..., "torchvision": ..., "pyhessian": ...,
    "python": "3.11.7"}``; a distribution that is not installed reads "not installed"."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = NOT_INSTALLED
    out["python"] = platform.python_version()
    return out


def describe(recorded: dict[str, str]) -> str:
    """``lth-tune 0.1.0, ray 2.60.0, …, python 3.11.7``."""
    return ", ".join(f"{name} {version}" for name, version in recorded.items())


def produced_with(recorded: dict[str, str] | None) -> str:
    """One line for an experiment's ``study.json`` ``versions`` record."""
    if not recorded:
        return "produced with: versions not recorded (study.json written before lth-tune recorded them)"
    return f"produced with: {describe(recorded)}"


def version_differences(recorded: dict[str, str] | None, current: dict[str, str]) -> list[str]:
    """One line per package whose version here differs from the recorded run's (none when they agree)."""
    if not recorded:
        return [f"the run records no versions (written before lth-tune recorded them); now {describe(current)}"]
    lines = []
    for name in {**recorded, **current}:
        was, now = recorded.get(name, NOT_INSTALLED), current.get(name, NOT_INSTALLED)
        if was != now:
            lines.append(f"{name} {now} here, {was} in the run being continued")
    return lines
