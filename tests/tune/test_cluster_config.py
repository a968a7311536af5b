"""cluster.yaml / cluster-gcp.yaml: offline validation with Ray's own autoscaler schema (no cloud credentials)."""

import copy
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.locked import lock

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {"aws": ROOT / "cluster.yaml", "gcp": ROOT / "cluster-gcp.yaml"}


def load(name):
    return yaml.safe_load(CONFIGS[name].read_text())


def prepared(config):
    """What `ray up` does before talking to the cloud: fill Ray's provider defaults, then check the schema."""
    config = prepare_config(copy.deepcopy(config))
    validate_config(config)
    return config


def workers(config):
    return {k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]}


def is_spot(provider, node_config):
    if provider == "aws":
        return node_config.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
    return any(s.get("provisioningModel") == "SPOT" or s.get("preemptible") for s in node_config.get("scheduling", []))


@pytest.mark.parametrize("name", CONFIGS)
def test_cluster_config_passes_rays_schema(name):
    raw = load(name)
    assert raw["provider"]["type"] == name
    assert "available_node_types" in raw and "head_node" not in raw and "worker_nodes" not in raw
    config = prepared(raw)
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {"CPU": 0} and head["max_workers"] == 0  # the head runs no trials
    types = workers(config)
    spot = [k for k, v in types.items() if is_spot(name, v["node_config"])]
    on_demand = [k for k in types if k not in spot]
    assert spot and on_demand
    for t in types.values():
        assert 0 <= t["min_workers"] <= t["max_workers"] <= config["max_workers"]
    assert sum(t["min_workers"] for t in types.values()) >= 1


@pytest.mark.parametrize("name", CONFIGS)
def test_cluster_installs_the_project_and_secures_ray(name):
    config = load(name)
    assert config["file_mounts"]["~/lth-tune"] == "."
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert ".venv" in config["rsync_exclude"]
    setup = "\n".join(config["setup_commands"])
    assert '-e "$HOME/lth-tune[rdb]"' in setup
    head_start = " ".join(config["head_start_ray_commands"])
    worker_start = " ".join(config["worker_start_ray_commands"])
    for cmd in (head_start, worker_start):
        assert "RAY_AUTH_MODE=token ray start" in cmd
    assert "--dashboard-host=127.0.0.1" in head_start  # reachable through `ray dashboard` (SSH tunnel) only
    assert "0.0.0.0" not in CONFIGS[name].read_text()


def pip_installs(commands):
    """(python, constraints file, requirements, editables) of every ``pip install`` among ``commands``."""
    out = []
    for cmd in commands:
        words = shlex.split(cmd.split("#")[0])
        if "pip" not in words or "install" not in words:
            continue
        python, args = words[0], words[words.index("install") + 1:]
        constraints, reqs, editables = None, [], []
        while args:
            arg = args.pop(0)
            if arg in ("-c", "--constraint"):
                constraints = args.pop(0)
            elif arg in ("-e", "--editable"):
                editables.append(args.pop(0))
            elif arg.startswith("-"):
                assert arg in ("--quiet", "-q"), f"unexpected pip option {arg} in: {cmd}"
            else:
                reqs.append(arg)
        out.append((python, constraints, reqs, editables))
    return out


@pytest.mark.parametrize("name", CONFIGS)
def test_every_node_installs_the_locked_versions(name):
    """Offline: each pip install on a node uses the synced lock and pins nothing itself; the packages it names
    are pinned in the lock (and resolved by `make lock-check`); the project's environment has the lock's Python
    and comes first on PATH for `ray start`, the trials and `lth-tune`."""
    assert_installs_locked(name, load(name))


def pin_ray_itself(c):
    c["setup_commands"] = [x.replace('"ray[default,tune]"', '"ray[default,tune]==2.59.0"') for x in c["setup_commands"]]


def install_without_the_lock(c):
    c["head_setup_commands"].append("python3 -m pip install --quiet requests")


def install_an_unlocked_package(c):
    c["head_setup_commands"].append("python3 -m pip install -c ~/lth-tune/constraints.txt nonsuch")


def another_python(c):
    c["setup_commands"] = [x.replace("--python 3.11", "--python 3.10") for x in c["setup_commands"]]


@pytest.mark.parametrize(("mutate", "match"), [
    (pin_ray_itself, "pins a version itself"),
    (install_without_the_lock, "without the lock"),
    (install_an_unlocked_package, "not in constraints.txt"),
    (another_python, "not the lock's --python"),
])
def test_unlocked_installs_are_rejected(mutate, match):
    config = load("aws")
    mutate(config)
    with pytest.raises(AssertionError, match=re.escape(match)):
        assert_installs_locked("aws", config)


def assert_installs_locked(name, config):
    pins = lock.read_lock()
    installs = pip_installs(config["setup_commands"] + config["head_setup_commands"]
                            + config["worker_setup_commands"])
    assert len(installs) >= 3
    names = set()
    for python, constraints, reqs, editables in installs:
        assert constraints == "~/lth-tune/constraints.txt", f"{name}: pip install without the lock: {reqs}"
        for req in map(lock.Requirement, reqs):
            assert not req.specifier, f"{name}: {req} pins a version itself; the lock decides"
            assert lock.canonicalize_name(req.name) in pins, f"{name}: {req.name} is not in constraints.txt"
            names.add(str(req))
        assert all(e.startswith('$HOME/lth-tune') for e in editables)
    assert names <= set(lock.ALSO_INSTALLED), f"add {names - set(lock.ALSO_INSTALLED)} to ALSO_INSTALLED in .ci/lock.py"
    project = [i for i in installs if i[3]]
    assert len(project) == 1 and project[0][0] == "~/lth-venv/bin/python" and "ray[default,tune]" in project[0][2]
    assert pins["ray"] == ray.__version__  # laptop, cluster and these tests run the same Ray
    setup = config["setup_commands"]
    venv = next(c for c in setup if "uv venv" in c)
    assert f"--python {lock.lock_python()} ~/lth-venv" in venv, f"{name}: not the lock's --python: {venv}"
    assert setup.index(venv) < next(i for i, c in enumerate(setup) if "~/lth-venv/bin/python -m pip" in c)
    assert any('export PATH="$HOME/lth-venv/bin:$PATH"' in c and ".bashrc" in c for c in setup)
    for python, *_ in installs:
        assert python in ("python3", "~/lth-venv/bin/python")


@pytest.mark.parametrize("name", CONFIGS)
def test_cluster_config_holds_no_credentials(name):
    text = CONFIGS[name].read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}", text)  # AWS access key ids
    assert not re.search(r"(?i)(secret|password|passwd|private_key|api_key)\s*[:=]", text)
    assert "BEGIN" not in text and "ssh_private_key" not in text
    assert not re.search(r"RAY_AUTH_TOKEN\s*=", text)  # the token travels as a file, never inline


def break_unknown_key(c):
    next(iter(workers(c).values()))["node_confg"] = {}


def break_head_type(c):
    c["head_node_type"] = "no_such_type"


def break_min_workers(c):
    c["max_workers"] = 0


def break_resources(c):
    next(iter(workers(c).values()))["resources"] = {"GPU": "one"}


def break_provider(c):
    del c["provider"]["type"]


def break_max_workers_type(c):
    c["max_workers"] = "ten"


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize(("breaker", "error", "match"), [
    (break_unknown_key, jsonschema.ValidationError, "'node_confg' was unexpected"),
    (break_head_type, ValueError, "head_node_type` must be one of"),
    (break_min_workers, ValueError, "smaller than the sum of `min_workers`"),
    (break_resources, jsonschema.ValidationError, "'one' is not of type 'integer'"),
    (break_provider, KeyError, "type"),
    (break_max_workers_type, jsonschema.ValidationError, "'ten' is not of type 'integer'"),
])
def test_broken_variants_are_rejected(name, breaker, error, match):
    config = load(name)
    breaker(config)
    with pytest.raises(error, match=match):
        prepared(config)
