"""constraints.txt, the lock: check that it resolves, or write it from the environment the tests passed in.

    python .ci/lock.py check     # (make lock-check, CI) everything README and cluster*.yaml install resolves
                                 # inside the lock: pip --dry-run with -c constraints.txt, then every package
                                 # pip would take must be pinned there
    python .ci/lock.py update    # after `make test` passed in .venv: rewrite constraints.txt from it

`update` pins every installed distribution that lth-tune[dev] needs (the tests' environment), then resolves
what the laptop and the cluster install besides (ray[default], the rdb extra, boto3, google-api-python-client,
uv) against those pins and pins that too. Run it with the interpreter of the environment (.venv/bin/python).
tests/test_lock.py imports this file: the environment matches the lock, pyproject.toml admits it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"
PROJECT = "lth-tune"
#: the extras `make setup` installs: the environment the tests pass in
TESTED_EXTRAS = ("dev",)
#: installed besides the project on a laptop (README) and on cluster nodes (cluster*.yaml), not by the tests
ALSO_INSTALLED = ("ray[default,tune]", "boto3", "google-api-python-client", "uv")
ALSO_EXTRAS = ("rdb",)
#: never pinned: the installer, the project itself, and torch's CUDA runtime wheels (nvidia-*, cuda-*,
#: triton), which torch pins itself (==) for each of its builds and which exist on Linux only
UNPINNED = re.compile(r"^(pip|lth-tune|nvidia-.*|cuda-.*|triton)$")

HEADER = """\
# The lock: the exact versions the test suite passes with. Every install uses it:
#   make setup / make test / .ci/run:  pip install -c constraints.txt -e '.[dev]'
#   laptop (README):                   pip install -c constraints.txt -e '.[rdb]' 'ray[default]' boto3
#   cluster nodes (cluster*.yaml):     pip install -c ~/lth-tune/constraints.txt 'ray[default,tune]' -e ~/lth-tune[rdb]
#   GPU check (.ci/gpu-check)
# Made with CPython {python} on {platform}: pins such as numpy, pandas and scipy need Python >= 3.11, and
# packages needed only on other platforms are not pinned.
# Not pinned: pip, lth-tune itself, and torch's CUDA runtime wheels (nvidia-*, cuda-*, triton): torch pins
# them itself for each build, they exist on Linux only, and torch==X also admits X+cu128 etc. from PyTorch's
# own index for a node whose driver needs another CUDA build.
# Checked by `make lock-check` (CI). Update: in a fresh .venv, install newer versions, run `make test`, then
# `.venv/bin/python .ci/lock.py update`.
"""
TESTED = "# --- the tests' environment (lth-tune[dev])"
ALSO = "# --- also installed on a laptop and on cluster nodes (ray[default], rdb extra, autoscaler clients, uv)"


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """{canonical name: version} of the ``name==version`` lines."""
    pins: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;=<>!~]+)", line)
        if not m:
            raise ValueError(f"{path.name}:{n}: {line!r} is not an exact pin name==version")
        name = canonicalize_name(m.group(1))
        if name in pins:
            raise ValueError(f"{path.name}:{n}: {name} is pinned twice")
        pins[name] = m.group(2)
    return pins


def lock_python(path: Path = LOCK) -> str:
    """The ``major.minor`` of the Python the lock was made with (its header)."""
    m = re.search(r"Made with CPython (\d+\.\d+)", path.read_text())
    if not m:
        raise ValueError(f"{path.name}: the header names no 'Made with CPython X.Y'")
    return m.group(1)


def project_requirements(extras: tuple[str, ...]) -> list[Requirement]:
    import tomllib  # Python >= 3.11, as the lock

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


def installed_closure(reqs: list[Requirement]) -> tuple[dict[str, str], list[str]]:
    """({canonical name: installed version} of every distribution ``reqs`` need here, [missing requirements])."""
    env = default_environment()
    found: dict[str, str] = {}
    missing: list[str] = []
    todo = [(r, "") for r in reqs]
    seen: set[tuple[str, frozenset]] = set()
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({**env, "extra": extra}):
            continue
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(str(req))
            continue
        found[name] = dist.version
        for sub in dist.requires or []:
            sub = Requirement(sub)
            if sub.marker is None:
                todo.append((sub, ""))
            else:  # needed by the distribution itself, or by one of the extras asked of it
                todo += [(sub, e) for e in ("", *req.extras)]
    return found, missing


def resolve(reqs: list[str], lock: Path) -> dict[str, str]:
    """What pip would install here for ``reqs`` under the lock (dry run; installed packages are kept)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report),
               "-c", str(lock), *reqs]
        run = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if run.returncode != 0:
            sys.exit(f"{lock.name} does not resolve: pip install --dry-run -c {lock.name} {' '.join(reqs)}\n"
                     + run.stderr[-4000:])
        data = json.loads(report.read_text())
    return {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in data["install"]}


def everything_installed() -> list[str]:
    project = [str(r) for r in project_requirements(TESTED_EXTRAS + ALSO_EXTRAS)]
    return [*project, *ALSO_INSTALLED]


def check(lock: Path = LOCK) -> int:
    pins = read_lock(lock)
    would = resolve(everything_installed(), lock)
    loose = sorted(f"{n}=={v}" for n, v in would.items() if not UNPINNED.match(n) and n not in pins)
    if loose:
        print(f"{lock.name}: these would be installed unpinned (add them, or run .ci/lock.py update): "
              + ", ".join(loose), file=sys.stderr)
        return 1
    print(f"{lock.name}: {len(pins)} pins; the README's and cluster*.yaml's installs resolve inside it")
    return 0


def update(lock: Path = LOCK) -> int:
    tested, missing = installed_closure(project_requirements(TESTED_EXTRAS))
    if missing:
        sys.exit(f"not installed here: {', '.join(missing)} (run make setup first)")
    tested = {n: v for n, v in tested.items() if not UNPINNED.match(n)}
    body = [TESTED, *(f"{n}=={v}" for n, v in sorted(tested.items()))]
    with tempfile.TemporaryDirectory() as tmp:
        partial = Path(tmp) / "constraints.txt"
        partial.write_text("\n".join(body) + "\n")
        also = {n: v for n, v in resolve(everything_installed(), partial).items()
                if not UNPINNED.match(n) and n not in tested}
    body += ["", ALSO, *(f"{n}=={v}" for n, v in sorted(also.items()))]
    header = HEADER.format(python=platform.python_version(), platform=f"{platform.system()} {platform.machine()}")
    lock.write_text(header + "\n" + "\n".join(body) + "\n")
    print(f"wrote {lock}: {len(tested)} tested pins + {len(also)} for laptop and cluster installs")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("check", "update"))
    return {"check": check, "update": update}[parser.parse_args().command]()


if __name__ == "__main__":
    sys.exit(main())
