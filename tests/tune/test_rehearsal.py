"""`lth-tune rehearse`: cluster.yaml / cluster-gcp.yaml on Ray's local autoscaling cluster (no cloud).

The fast tests read the node types out of the real cluster files; the end-to-end ones (marked e2e) run a
shrunk rehearsal of each file: the autoscaler launches GPU workers (resource counts, CPU-only trials) for a
study started the way a ``ray job submit`` entrypoint starts it on the head, and releases them afterwards.
"""

import copy
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import validate_config

from lth_tune.cli import job_address
from lth_tune.config import load_study
from lth_tune.tune.rehearsal import (
    DEFAULT_STUDY,
    FAKE_HEAD_TYPE,
    RehearsalError,
    _types_by_node_id,
    autoscaling_config,
    node_types,
    rehearse,
)

ROOT = Path(__file__).resolve().parents[2]
FILES = {"aws": ROOT / "cluster.yaml", "gcp": ROOT / "cluster-gcp.yaml"}


def load(name):
    return yaml.safe_load(FILES[name].read_text())


@pytest.mark.parametrize(("name", "instance"), [("aws", "g5.2xlarge"), ("gcp", "g2-standard-8")])
def test_node_types_of_the_cluster_files(name, instance):
    head, workers = node_types(load(name))
    assert (head.cpu, head.gpu, head.max_workers) == (0, 0, 0)  # the head runs no trials
    assert set(workers) == {"gpu_spot", "gpu_ondemand"}
    for t in workers.values():
        assert (t.instance, t.cpu, t.gpu) == (instance, 8, 1)  # what Ray detects on the instance in the cloud
    assert (workers["gpu_spot"].min_workers, workers["gpu_spot"].max_workers) == (0, 8)
    assert (workers["gpu_ondemand"].min_workers, workers["gpu_ondemand"].max_workers) == (1, 2)
    # the paper study the README submits packs four trials on each 1-GPU, 8-vCPU worker
    r = load_study(DEFAULT_STUDY).resources
    assert all(t.trials_per_node(r.cpu, r.gpu, r.custom) == 4 for t in workers.values())


def test_declared_resources_win_and_unknown_instances_are_named():
    config = load("aws")
    config["available_node_types"]["gpu_spot"]["resources"] = {"CPU": 4, "GPU": 2, "big": 1}
    _, workers = node_types(config)
    assert workers["gpu_spot"].resources() == {"CPU": 4, "GPU": 2, "big": 1}
    assert workers["gpu_spot"].trials_per_node(2, 0.25) == 2  # CPUs bind before GPUs here
    config["available_node_types"]["gpu_ondemand"]["node_config"]["InstanceType"] = "x9.mystery"
    with pytest.raises(RehearsalError, match="x9.mystery"):
        node_types(config)
    gcp = load("gcp")
    node = gcp["available_node_types"]["gpu_spot"]["node_config"]
    node.update(machineType="n1-standard-8", guestAccelerators=[{"acceleratorCount": 2}])
    assert node_types(gcp)[1]["gpu_spot"].gpu == 2


@pytest.mark.parametrize("name", FILES)
def test_autoscaling_config_keeps_the_layout_and_passes_rays_schema(name):
    raw = load(name)
    config = autoscaling_config(raw, gcs_address="127.0.0.1:1", idle_timeout_minutes=0.1)
    validate_config(copy.deepcopy(config))
    assert config["provider"]["type"] == "fake_multinode"
    assert (config["max_workers"], config["upscaling_speed"]) == (raw["max_workers"], raw["upscaling_speed"])
    assert config["idle_timeout_minutes"] == 0.1 and raw["idle_timeout_minutes"] == 10
    types = config["available_node_types"]
    assert types[FAKE_HEAD_TYPE]["resources"] == {"CPU": 0}
    assert types["gpu_spot"]["resources"]["GPU"] == 1 and types["gpu_spot"]["max_workers"] == 8
    assert types["gpu_ondemand"]["min_workers"] == 1


def test_node_types_of_launched_nodes_come_from_the_autoscaler_log():
    log = ("2026-12-02 18:17:24,296\tINFO node_launcher.py:177 -- NodeLauncher0: Launching 1 nodes, type gpu_ondemand.\n"
           "2026-12-02 18:17:45,250\tINFO node_launcher.py:177 -- NodeLauncher1: Launching 2 nodes, type gpu_spot.\n")
    assert _types_by_node_id(log) == {"f" * 51 + "00001": "gpu_ondemand", "f" * 51 + "00002": "gpu_spot",
                                      "f" * 51 + "00003": "gpu_spot"}


def test_a_job_entrypoint_joins_its_cluster(monkeypatch):
    """`ray job submit -- lth-tune sweep …` without --address: the job's cluster, not a new local Ray."""
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert job_address() is None  # a laptop with RAY_ADDRESS exported for the job CLI: nothing changes
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    assert job_address() == "10.0.0.5:6379"


@pytest.mark.e2e
@pytest.mark.parametrize(("name", "storage", "address"), [
    ("aws", "moto", "auto"),  # S3 on loopback; the README's `--address auto`
    ("gcp", None, None),  # a directory stands in for gs://; the entrypoint without --address
])
def test_rehearsal_schedules_packs_stores_and_releases(name, storage, address, tmp_path, data_root):
    report = rehearse(FILES[name], trials=8, levels=1, epochs=10, storage=storage, address=address,
                      idle_timeout_s=5, data_root=data_root, workdir=tmp_path)
    print(report.text())
    assert report.ok, report.text()
    assert report.expected_per_node == 4 and max(report.obs.packing.values()) == 4
    assert sum(report.launched.values()) >= 1 and "gpu_ondemand" not in report.released
    assert len(report.autoscaled()) >= 1 and all(n.dead_at is not None for n in report.autoscaled())
