"""cluster.yaml / cluster-gcp.yaml: offline validation with Ray's own autoscaler schema (no cloud credentials)."""

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

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
    assert f"ray[default,tune]=={ray.__version__}" in setup  # cluster and laptop must run the same Ray
    head_start = " ".join(config["head_start_ray_commands"])
    worker_start = " ".join(config["worker_start_ray_commands"])
    for cmd in (head_start, worker_start):
        assert "RAY_AUTH_MODE=token ray start" in cmd
    assert "--dashboard-host=127.0.0.1" in head_start  # reachable through `ray dashboard` (SSH tunnel) only
    assert "0.0.0.0" not in CONFIGS[name].read_text()


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
