"""The layering rule of docs/architecture.md: a module imports only from lower floors (or its own package).

Every ``import`` in ``lth_tune`` and ``analysis`` is read with ``ast`` (function-level imports included) and
mapped to a floor; an import of the same floor from another package, or of a higher floor, fails the test.
Below the Ray edge nothing imports ``ray``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: floor of each top-level unit (``lth_tune.<unit>`` or the ``analysis`` package); bottom = 0
FLOORS = {
    "lth_tune.seeding": 0,
    "lth_tune.stats": 0,
    "lth_tune.versions": 0,
    "lth_tune.data": 1,
    "lth_tune.models": 1,
    "lth_tune.pruning": 2,
    "lth_tune.training": 3,
    "lth_tune.flatness": 4,
    "lth_tune.pacbayes": 4,
    "lth_tune.config": 5,
    "lth_tune.runs": 6,
    "analysis": 6,  # reads results and uses the mathematics: no runner, no Ray
    "lth_tune.tune": 7,
    "lth_tune.cli": 9,
    "lth_tune.docs": 9,
    "lth_tune": 9,  # the package's __init__
}
RAY_FREE_BELOW = FLOORS["lth_tune.tune"]
#: the only units of lth_tune that may import the analysis package (to draw figures for a command)
ANALYSIS_USERS = {"lth_tune.cli"}


def unit_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "analysis":
        return "analysis"
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, node.lineno))
    return out


def sources() -> list[Path]:
    return sorted([*(ROOT / "lth_tune").rglob("*.py"), *(ROOT / "analysis").rglob("*.py")])


def test_every_unit_has_a_floor():
    units = {unit_of(module_name(p)) for p in sources()}
    assert units <= set(FLOORS), f"add these to FLOORS and docs/architecture.md: {sorted(units - set(FLOORS))}"


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path: Path):
    me = unit_of(module_name(path))
    floor = FLOORS[me]
    bad = []
    for target, line in imports_of(path):
        if not target.startswith(("lth_tune", "analysis")):
            if target.split(".")[0] == "ray" and floor < RAY_FREE_BELOW:
                bad.append(f"line {line}: imports {target} below the Ray edge")
            continue
        other = unit_of(target)
        if other == me:
            continue
        if other == "analysis" and me.startswith("lth_tune") and me not in ANALYSIS_USERS:
            bad.append(f"line {line}: {me} imports {target}; only the CLI may import analysis")
            continue
        if other not in FLOORS:
            bad.append(f"line {line}: imports unknown unit {target}")
        elif FLOORS[other] >= floor:
            bad.append(f"line {line}: {me} (floor {floor}) imports {target} (floor {FLOORS[other]})")
    assert not bad, f"{path.relative_to(ROOT)}: " + "; ".join(bad)


def test_the_rule_catches_an_upward_import(tmp_path, monkeypatch):
    """The check itself can fail: a pacbayes module importing the config is reported."""
    fake = ROOT / "lth_tune" / "pacbayes" / "_probe_upward.py"
    fake.write_text("from lth_tune.config import ExperimentConfig\nimport ray\n")
    try:
        with pytest.raises(AssertionError, match="imports lth_tune.config"):
            test_imports_point_down(fake)
    finally:
        fake.unlink()
