"""Cluster rehearsal without a cloud: a cluster file's node types on Ray's local autoscaling cluster.

``lth-tune rehearse cluster.yaml`` reads ``available_node_types`` (head and worker types, ``min_workers`` /
``max_workers``, resources), the cluster's ``max_workers``, ``upscaling_speed`` and ``idle_timeout_minutes``,
and starts the same layout on this machine with Ray's ``fake_multinode`` node provider: the autoscaler runs
for real and launches each worker "instance" as a local Ray node (a raylet with the instance's declared
resources; GPUs are resource counts, trials run on the CPU). A small MNIST-1D study with the real study's
``resources`` (default: the paper study the README submits, ``gpu: 0.25, cpu: 2``) is then started the way
a ``ray job submit`` entrypoint starts it on the head (``RAY_ADDRESS`` set, ``lth-tune sweep … --address auto
--storage …``), and the rehearsal checks that

- trials wait for, then land on, workers the autoscaler launched for them;
- fractional GPU requests pack as declared (four ``gpu: 0.25`` trials on a 1-GPU worker);
- ``results.csv``, ``trials.csv`` and ``study.json`` reach the storage (a moto S3 server on loopback, or a
  directory standing in for a bucket);
- idle workers are released after the study (after the idle timeout, shrunk for the rehearsal), while
  ``min_workers`` stay.

Only processes this rehearsal starts are ever stopped: the head by its handle, the fake worker nodes by the
process ids the autoscaler started (never ``ray stop``, which would stop every Ray cluster on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: (vCPUs, GPUs) that Ray detects on an instance type; used when a node type leaves ``resources`` empty.
INSTANCE_SHAPES: dict[str, tuple[int, int]] = {
    # AWS
    "g5.xlarge": (4, 1), "g5.2xlarge": (8, 1), "g5.4xlarge": (16, 1), "g5.8xlarge": (32, 1),
    "g5.12xlarge": (48, 4), "g5.48xlarge": (192, 8), "g4dn.xlarge": (4, 1), "g4dn.2xlarge": (8, 1),
    "g6.xlarge": (4, 1), "g6.2xlarge": (8, 1), "p3.2xlarge": (8, 1), "p4d.24xlarge": (96, 8),
    "m6i.large": (2, 0), "m6i.xlarge": (4, 0), "m6i.2xlarge": (8, 0), "m5.xlarge": (4, 0),
    # GCP
    "g2-standard-4": (4, 1), "g2-standard-8": (8, 1), "g2-standard-12": (12, 1), "g2-standard-16": (16, 1),
    "g2-standard-24": (24, 2), "g2-standard-48": (48, 4), "a2-highgpu-1g": (12, 1), "a2-highgpu-2g": (24, 2),
    "n2-standard-2": (2, 0), "n2-standard-4": (4, 0), "n2-standard-8": (8, 0), "n1-standard-8": (8, 0),
}
#: The fake provider knows its head node by this type name.
FAKE_HEAD_TYPE = "ray.head.default"
#: Object store of each fake node: small, the study passes no large objects.
OBJECT_STORE_BYTES = 200 * 1024 * 1024
#: The rehearsal's default study: the one the README submits to the cluster (its resources are what packs).
DEFAULT_STUDY = Path(__file__).resolve().parents[2] / "search_spaces" / "paper" / "l2init_resnet20_cifar10.yaml"


class RehearsalError(RuntimeError):
    pass


# --------------------------------------------------------------------------- node types from the cluster file


@dataclass
class NodeType:
    name: str
    instance: str | None
    cpu: float
    gpu: float
    custom: dict[str, float]
    min_workers: int
    max_workers: int
    source: str  # where CPU/GPU come from: "declared", "instance table" or both

    def resources(self) -> dict[str, float]:
        return {"CPU": self.cpu, "GPU": self.gpu, **self.custom}

    def trials_per_node(self, cpu: float, gpu: float, custom: dict[str, float] | None = None) -> int:
        """How many trials of these per-trial resources fit on one node of this type."""
        fits = []
        for key, need in {"CPU": cpu, "GPU": gpu, **(custom or {})}.items():
            if need > 0:
                fits.append(int(self.resources().get(key, 0) // need + 1e-9))
        return min(fits) if fits else 0


def instance_type(node_config: dict[str, Any]) -> str | None:
    return node_config.get("InstanceType") or node_config.get("machineType")


def _gcp_accelerators(node_config: dict[str, Any]) -> int:
    return sum(int(a.get("acceleratorCount", 0)) for a in node_config.get("guestAccelerators", []) or [])


def node_types(config: dict[str, Any]) -> tuple[NodeType, dict[str, NodeType]]:
    """(head type, worker types) of a cluster file: declared ``resources`` win, missing CPU/GPU counts come from
    :data:`INSTANCE_SHAPES` (what Ray detects on that instance in the cloud)."""
    types = config.get("available_node_types") or {}
    head_name = config.get("head_node_type")
    if head_name not in types:
        raise RehearsalError("the cluster file needs available_node_types and a head_node_type among them")
    out = {}
    for name, spec in types.items():
        node_config = spec.get("node_config") or {}
        declared = dict(spec.get("resources") or {})
        instance = instance_type(node_config)
        shape = INSTANCE_SHAPES.get(instance or "")
        missing = [k for k in ("CPU", "GPU") if k not in declared]
        if missing and shape is None:
            raise RehearsalError(
                f"available_node_types.{name}: instance type {instance!r} is not in lth_tune.tune.rehearsal."
                f"INSTANCE_SHAPES; declare resources: {{CPU: n, GPU: n}} for it")
        cpu = float(declared.pop("CPU", shape[0] if shape else 0))
        gpu = float(declared.pop("GPU", (shape[1] if shape else 0) + _gcp_accelerators(node_config)))
        is_head = name == head_name
        out[name] = NodeType(
            name=name, instance=instance, cpu=cpu, gpu=gpu, custom={k: float(v) for k, v in declared.items()},
            min_workers=0 if is_head else int(spec.get("min_workers", 0)),
            max_workers=0 if is_head else int(spec.get("max_workers", config.get("max_workers", 0))),
            source="instance table" if len(missing) == 2 else "declared" if not missing
            else f"{'CPU' if 'CPU' not in missing else 'GPU'} declared, rest instance table",
        )
    head = out.pop(head_name)
    return head, out


def autoscaling_config(config: dict[str, Any], *, gcs_address: str, idle_timeout_minutes: float | None = None,
                       max_workers: int | None = None) -> dict[str, Any]:
    """The cluster file as a ``fake_multinode`` autoscaling config: same node types, limits and upscaling speed;
    the head becomes the fake provider's head type; ``idle_timeout_minutes`` and the cluster's ``max_workers``
    may be shrunk for a rehearsal."""
    head, workers = node_types(config)
    available = {FAKE_HEAD_TYPE: {"resources": _ray_resources(head), "node_config": {}, "max_workers": 0}}
    for t in workers.values():
        available[t.name] = {"resources": {**_ray_resources(t), "object_store_memory": OBJECT_STORE_BYTES},
                             "node_config": {}, "min_workers": t.min_workers, "max_workers": t.max_workers}
    total = config.get("max_workers", sum(t.max_workers for t in workers.values()))
    return {
        "cluster_name": f"{config.get('cluster_name', 'cluster')}-rehearsal",
        "max_workers": min(total, max_workers) if max_workers is not None else total,
        "upscaling_speed": config.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": config.get("idle_timeout_minutes", 5) if idle_timeout_minutes is None
        else idle_timeout_minutes,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "launch_multiple": True,  # one node per requested node (else one per launch batch)
                     "disable_launch_config_check": True, "gcs_address": gcs_address},
        "available_node_types": available,
        "head_node_type": FAKE_HEAD_TYPE,
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


def _ray_resources(t: NodeType) -> dict[str, float]:
    res = {"CPU": t.cpu, **t.custom}
    if t.gpu:
        res["GPU"] = t.gpu
    return res


# --------------------------------------------------------------------------- the local autoscaling cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (Linux /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@contextlib.contextmanager
def _environ(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class LocalAutoscalingCluster:
    """A Ray head (``ray.cluster_utils.Cluster``, no CPUs for trials) whose autoscaler launches the cluster file's
    worker types as local nodes. ``ray.cluster_utils.AutoscalingCluster`` would do the same but starts and stops
    with ``ray stop --force``, which kills every Ray process on the machine; this class stops what it started
    only."""

    def __init__(self, config: dict[str, Any], *, idle_timeout_minutes: float | None = None,
                 max_workers: int | None = None, update_interval_s: int = 1):
        self.source = config
        self.head_type, self.worker_types = node_types(config)
        self.port = _free_port()
        self._idle = idle_timeout_minutes
        self._max_workers = max_workers
        self._interval = update_interval_s
        self.cluster = None
        self.autoscaling = None
        self._dir = Path(tempfile.mkdtemp(prefix="lth-rehearsal-"))
        self._monitor_pid: int | None = None

    @property
    def address(self) -> str:
        return self.cluster.address

    def start(self) -> LocalAutoscalingCluster:
        import ray
        from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID
        from ray.cluster_utils import Cluster

        ip = ray._private.services.get_node_ip_address()
        self.autoscaling = autoscaling_config(self.source, gcs_address=f"{ip}:{self.port}",
                                              idle_timeout_minutes=self._idle, max_workers=self._max_workers)
        path = self._dir / "autoscaling.json"
        path.write_text(json.dumps(self.autoscaling, indent=2))
        head = _ray_resources(self.head_type)
        extra = {k: v for k, v in head.items() if k not in ("CPU", "GPU")}
        # The autoscaler (the head's monitor process) and the nodes it launches inherit this environment.
        with _environ(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S=str(int(self._interval))):
            self.cluster = Cluster(initialize_head=True, head_node_args={
                "num_cpus": head.get("CPU", 0), "num_gpus": head.get("GPU", 0), "resources": extra or None,
                "gcs_server_port": self.port, "autoscaling_config": str(path), "include_dashboard": False,
                "env_vars": {"RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID},
            })
        self._monitor_pid = self.cluster.head_node.all_processes["monitor"][0].process.pid
        return self

    def nodes(self) -> list[dict[str, Any]]:
        return self.cluster.global_state.node_table()

    def placement_groups(self) -> dict[str, dict[str, Any]]:
        return self.cluster.global_state.placement_group_table()

    def monitor_log(self) -> str:
        """The autoscaler's log (what it launched and terminated, and why)."""
        logs = Path(self.cluster.head_node.get_logs_dir_path())
        return "".join(p.read_text(errors="replace") for p in sorted(logs.glob("monitor.log*")))

    def wait_for_workers(self, count: int, timeout: float) -> float:
        """Seconds until ``count`` worker nodes are alive."""
        t0 = time.time()
        while time.time() - t0 < timeout:
            if sum(n["Alive"] and _is_worker(n) for n in self.nodes()) >= count:
                return time.time() - t0
            time.sleep(0.3)
        raise RehearsalError(f"{count} worker node(s) did not come up within {timeout:.0f} s")

    def shutdown(self) -> None:
        if self.cluster is None:
            return
        # The fake worker nodes are processes of the autoscaler (the monitor): collect them before the head
        # (and the monitor with it) goes, then end exactly those.
        nodes = _descendants(self._monitor_pid) if self._monitor_pid else []
        self.cluster.shutdown()
        for pid in nodes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.cluster = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.shutdown()


def _is_worker(node: dict[str, Any]) -> bool:
    return "node:__internal_head__" not in node.get("Resources", {}) and node["NodeID"] != "f" * 51 + "00000"


# --------------------------------------------------------------------------- observing the cluster


@dataclass
class NodeSeen:
    node_id: str
    resources: dict[str, float]
    alive_at: float
    dead_at: float | None = None
    initial: bool = False  # up before the study started (min_workers)


@dataclass
class TrialSeen:
    """One trial's placement group (Tune reserves each trial's resources with one)."""
    pg_id: str
    bundle: dict[str, float]
    pending_at: float
    created_at: float | None = None
    removed_at: float | None = None
    node_id: str | None = None
    latency_ms: float | None = None


@dataclass
class Observation:
    t0: float
    nodes: dict[str, NodeSeen] = field(default_factory=dict)
    trials: dict[str, TrialSeen] = field(default_factory=dict)
    packing: dict[str, int] = field(default_factory=dict)  # most trials seen at once on each node


class Observer(threading.Thread):
    """Polls the GCS (nodes, placement groups) every ``interval`` seconds, from a thread."""

    def __init__(self, cluster: LocalAutoscalingCluster, interval: float = 0.5):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.interval = interval
        self.obs = Observation(t0=time.time())
        self._halt = threading.Event()
        self.errors: list[str] = []

    def poll(self) -> None:
        now = time.time() - self.obs.t0
        for n in self.cluster.nodes():
            if not _is_worker(n):
                continue
            seen = self.obs.nodes.get(n["NodeID"])
            if seen is None and n["Alive"]:
                resources = {k: v for k, v in n["Resources"].items() if k in ("CPU", "GPU") or not k.startswith(
                    ("node:", "memory", "object_store_memory"))}
                self.obs.nodes[n["NodeID"]] = NodeSeen(n["NodeID"], resources, alive_at=now)
            elif seen is not None and not n["Alive"] and seen.dead_at is None:
                seen.dead_at = now
        running: dict[str, int] = {}
        for pg_id, pg in self.cluster.placement_groups().items():
            seen = self.obs.trials.get(pg_id)
            if seen is None:
                if pg["state"] == "REMOVED":
                    continue
                seen = self.obs.trials[pg_id] = TrialSeen(pg_id, dict(pg["bundles"].get(0, {})), pending_at=now)
            if pg["state"] == "CREATED":
                if seen.created_at is None:
                    seen.created_at = now
                    seen.node_id = pg["bundles_to_node_id"].get(0)
                    seen.latency_ms = pg["stats"]["end_to_end_creation_latency_ms"]
                running[seen.node_id] = running.get(seen.node_id, 0) + 1
            elif pg["state"] == "REMOVED" and seen.removed_at is None:
                seen.removed_at = now
        for node, n in running.items():
            self.obs.packing[node] = max(self.obs.packing.get(node, 0), n)

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.poll()
            except Exception as err:  # noqa: BLE001 - a missed poll is reported, never fatal
                self.errors.append(repr(err))
            self._halt.wait(self.interval)

    def mark_initial(self) -> None:
        """Nodes up now were up before the study (``min_workers``)."""
        self.poll()
        for n in self.obs.nodes.values():
            n.initial = True

    def stop(self) -> Observation:
        self._halt.set()
        self.join(timeout=10)
        return self.obs


# --------------------------------------------------------------------------- storage


@contextlib.contextmanager
def moto_s3(bucket: str = "lth-rehearsal"):
    """A moto S3 server on 127.0.0.1 with ``bucket``; yields ``s3://bucket`` and sets the AWS_* variables the
    driver, the autoscaler and the trials it starts inherit. Needs ``moto[server]`` (the dev extra)."""
    exe = next((e for e in (sys.executable, shutil.which("python3")) if e and subprocess.run(
        [e, "-c", "import moto.server"], capture_output=True, check=False).returncode == 0), None)
    if exe is None:
        raise RehearsalError("--storage moto needs moto[server] (pip install 'moto[server]'); "
                             "or give --storage DIR or a URI")
    port = _free_port()
    proc = subprocess.Popen([exe, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{bucket}", method="PUT"), timeout=2)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RehearsalError("the moto S3 server did not start") from None
                time.sleep(0.3)
        with _environ(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=endpoint):
            yield f"s3://{bucket}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def stored_files(storage: str, name: str) -> list[str]:
    """Files under ``storage/name`` (a URI or a directory), relative to it."""
    from lth_tune.tune.sweep import is_uri, join_uri

    if not is_uri(storage):
        root = Path(storage.removeprefix("file://")).expanduser() / name
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(join_uri(storage, name))
    infos = fs.get_file_info(pyarrow.fs.FileSelector(path.rstrip("/"), recursive=True, allow_not_found=True))
    return sorted(i.path.removeprefix(path.rstrip("/") + "/") for i in infos if i.type == pyarrow.fs.FileType.File)


# --------------------------------------------------------------------------- the rehearsal study


def rehearsal_study(path: Path, *, study: str | Path | None, trials: int, levels: int, epochs: int,
                    data_root: str, output_dir: str, name: str) -> dict[str, Any]:
    """A tiny MNIST-1D study (CPU) with the real study's ``resources`` (cpu, gpu, custom) and
    ``search.max_failures``: ``trials`` grid points, all requested at once."""
    from lth_tune.config import load_study

    real = load_study(study or DEFAULT_STUDY)
    r = real.resources
    lrs = [round(0.02 + 0.01 * i, 4) for i in range(trials)]
    raw = {
        "name": name,
        "description": f"lth-tune rehearse: resources of {study or DEFAULT_STUDY}",
        "experiment": {
            "seed": 3, "device": "cpu",
            "data": {"dataset": "mnist1d", "root": data_root, "train_subset": 600, "val_fraction": 0.2},
            "model": {"name": "mlp", "widths": [32]},
            "train": {"epochs": epochs, "lr": 0.05, "batch_size": 64},
            "pruning": {"levels": levels},
        },
        "search": {"sampler": "grid", "seed": 0, "max_concurrent": trials, "max_failures": real.search.max_failures,
                   "space": {"train.lr": {"choice": lrs}}},
        # the real per-trial request (what packs); one torch thread, since the trials share this machine's CPUs
        "resources": {"cpu": r.cpu, "gpu": r.gpu, "custom": dict(r.custom), "torch_threads": 1},
        "output": {"dir": output_dir},
    }
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return raw


# --------------------------------------------------------------------------- the rehearsal


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class RehearsalReport:
    cluster_file: str
    node_types: dict[str, NodeType]
    trial_resources: dict[str, float]
    expected_per_node: int
    idle_timeout_s: float
    configured_idle_timeout_min: float
    obs: Observation
    study_start: float
    study_end: float | None
    driver_wall_s: float
    driver_rc: int
    stored: list[str]
    launched: dict[str, int]  # node type → workers the autoscaler launched during the study
    released: dict[str, int]  # node type → those of them it released
    trials: int = 0
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def autoscaled(self) -> list[NodeSeen]:
        return [n for n in self.obs.nodes.values() if not n.initial]

    def first_request(self) -> float:
        """When the driver asked for the first trial's resources (seconds on the observer's clock)."""
        return min((t.pending_at for t in self.obs.trials.values()), default=self.study_start)

    def scale_up(self) -> list[dict[str, float]]:
        """Per autoscaled worker: seconds from the study's first resource request to the node being up, and to
        its first trial running."""
        out, t0 = [], self.first_request()
        for n in sorted(self.autoscaled(), key=lambda n: n.alive_at):
            first = min((t.created_at for t in self.obs.trials.values() if t.node_id == n.node_id and t.created_at
                         is not None), default=None)
            out.append({"node_up_s": n.alive_at - t0,
                        "first_trial_s": (first - t0) if first is not None else float("nan")})
        return out

    def trial_seconds(self) -> list[float]:
        return sorted(t.removed_at - t.created_at for t in self.obs.trials.values()
                      if t.created_at is not None and t.removed_at is not None)

    def releases(self) -> list[float]:
        """Per autoscaled worker: seconds from its last trial's end to the node being released."""
        out = []
        for n in self.autoscaled():
            last = max((t.removed_at for t in self.obs.trials.values() if t.node_id == n.node_id and t.removed_at
                        is not None), default=None)
            if n.dead_at is not None and last is not None:
                out.append(n.dead_at - last)
        return out

    def text(self) -> str:
        lines = [f"rehearsal of {self.cluster_file} on a local autoscaling cluster (CPU-only, offline)"]
        for t in self.node_types.values():
            lines.append(f"  {t.name}: {t.instance} → CPU {t.cpu:g}, GPU {t.gpu:g} ({t.source}), "
                         f"workers {t.min_workers}..{t.max_workers}")
        lines.append(f"  trial: {self.trial_resources} → {self.expected_per_node} per worker; "
                     f"idle timeout {self.idle_timeout_s:g} s (the file: {self.configured_idle_timeout_min:g} min)")
        wait = sorted((t.created_at - t.pending_at) for t in self.obs.trials.values() if t.created_at is not None)
        run = self.trial_seconds()
        if wait and run:
            lines.append(f"  {self.trials} trials, {len(self.obs.trials)} resource requests (placement groups); "
                         f"wait for resources min/median/max "
                         f"{wait[0]:.1f}/{wait[len(wait) // 2]:.1f}/{wait[-1]:.1f} s, run "
                         f"{run[0]:.1f}/{run[len(run) // 2]:.1f}/{run[-1]:.1f} s")
        lines.append(f"  driver: first resource request {self.first_request() - self.study_start:.1f} s after it started")
        for i, s in enumerate(self.scale_up()):
            lines.append(f"  autoscaled worker {i + 1}: up {s['node_up_s']:.1f} s after the study's first request, "
                         f"first trial on it at {s['first_trial_s']:.1f} s")
        lines.append(f"  autoscaler: launched {self.launched or 'nothing'} during the study, "
                     f"released {self.released or 'nothing'} after it")
        lines.append(f"  most trials at once per worker: {sorted(self.obs.packing.values(), reverse=True)}")
        rel = self.releases()
        if rel:
            lines.append(f"  released {len(rel)} idle worker(s) {min(rel):.1f}–{max(rel):.1f} s after their last trial")
        if self.study_end is not None:
            lines.append(f"  study: {self.study_end - self.study_start:.1f} s (driver process {self.driver_wall_s:.1f} s)")
        lines.append(f"  storage: {', '.join(f for f in self.stored if '/' not in f) or 'nothing'}")
        for c in self.checks:
            lines.append(f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
        return "\n".join(lines)


def _types_by_node_id(monitor_log: str) -> dict[str, str]:
    """The node type of each node the fake provider launched: it numbers nodes in launch order
    (``fff…00001``, ``fff…00002``, …) and the autoscaler logs each batch ("Launching 2 nodes, type gpu_spot.")."""
    import re

    out, k = {}, 0
    for count, name in re.findall(r"Launching (\d+) nodes, type ([\w.-]+?)\.?(?:\s|$)", monitor_log):
        for _ in range(int(count)):
            k += 1
            out["f" * 51 + str(k).zfill(5)] = name
    return out


def rehearse(cluster_file: str | Path, *, study: str | Path | None = None, trials: int = 12, levels: int = 2,
             epochs: int = 60, storage: str | None = "moto", address: str | None = "auto",
             idle_timeout_s: float = 6.0, data_root: str | None = None, workdir: str | Path | None = None,
             release_timeout_s: float = 90.0, study_timeout_s: float = 600.0, log=print) -> RehearsalReport:
    """Run the rehearsal.

    ``storage``: "moto" (an S3 server on loopback; a directory where moto is not installed), a URI, a directory,
    or None (a directory standing in for a bucket). The driver runs as ``ray job submit`` runs an entrypoint on
    the head: ``RAY_ADDRESS`` holds the cluster's address and Ray's job config variable is set; ``address`` is the
    ``--address`` the command passes (None: none, as a user who leaves it out)."""
    cluster_file = Path(cluster_file)
    config = yaml.safe_load(cluster_file.read_text())
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="lth-rehearse-"))
    work.mkdir(parents=True, exist_ok=True)
    name = f"rehearsal_{cluster_file.stem.replace('-', '_')}"
    study_path = work / f"{name}.yaml"
    raw = rehearsal_study(study_path, study=study, trials=trials, levels=levels, epochs=epochs,
                          data_root=data_root or str(work / "data"), output_dir=str(work / "local"), name=name)
    res = raw["resources"]
    with contextlib.ExitStack() as stack:
        if storage == "moto":
            try:
                # allow_delayed_open: small objects as one PutObject (moto's multipart completion confuses Arrow)
                storage = stack.enter_context(moto_s3()) + "/studies?allow_delayed_open=true"
            except RehearsalError as err:
                log(f"rehearse: {err}; a local directory stands in for the bucket")
                storage = None
        if storage is None:
            storage = str(work / "bucket")
        log(f"rehearse: {cluster_file} with a {trials}-trial study, storage {storage}, work directory {work}")
        cluster = LocalAutoscalingCluster(config, idle_timeout_minutes=idle_timeout_s / 60.0)
        stack.callback(cluster.shutdown)
        cluster.start()
        _, workers = cluster.head_type, cluster.worker_types
        floor = sum(t.min_workers for t in workers.values())
        up = cluster.wait_for_workers(floor, timeout=120) if floor else 0.0
        log(f"rehearse: head up, {floor} min_workers node(s) up after {up:.1f} s")
        observer = Observer(cluster)
        observer.mark_initial()
        observer.start()
        stack.callback(observer.stop)

        # the driver, as `ray job submit` starts an entrypoint on the head: Ray's job supervisor sets RAY_ADDRESS
        # to the cluster's address and passes the job's config in RAY_JOB_CONFIG_JSON_ENV_VAR
        env = dict(os.environ, RAY_ADDRESS=cluster.address, PYTHONUNBUFFERED="1",
                   RAY_JOB_CONFIG_JSON_ENV_VAR=json.dumps({"runtime_env": {}, "metadata": {}}))
        cmd = [sys.executable, "-m", "lth_tune.cli", "sweep", str(study_path),
               *(["--address", address] if address else []), "--storage", storage, "-v", "0"]
        log(f"rehearse: {' '.join(cmd[2:])}")
        study_start = time.time() - observer.obs.t0
        t_driver = time.time()
        out = open(work / "driver.log", "w")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        rc = None
        try:
            while rc is None and time.time() - t_driver < study_timeout_s:
                rc = proc.poll()
                if rc is None and not observer.obs.trials and time.time() - t_driver > 120:
                    log("rehearse: the driver has asked this cluster for nothing in 120 s (did it start a Ray of "
                        "its own?); stopping it")
                    break
                time.sleep(0.5)
        finally:
            if rc is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the driver this rehearsal started, and its children
                proc.wait()
                rc = -9
            out.close()
        driver_wall = time.time() - t_driver
        log(f"rehearse: driver exited {rc} after {driver_wall:.1f} s; waiting for idle workers to be released")
        observer.poll()
        ends = [t.removed_at for t in observer.obs.trials.values() if t.removed_at is not None]
        study_end = max(ends) if ends else None
        deadline = time.time() + release_timeout_s + idle_timeout_s
        while time.time() < deadline:
            alive_autoscaled = [n for n in observer.obs.nodes.values() if not n.initial and n.dead_at is None]
            if not alive_autoscaled:
                break
            time.sleep(0.5)
        obs = observer.stop()
        kinds = _types_by_node_id(cluster.monitor_log())
        launched, released = {}, {}
        for n in obs.nodes.values():
            if not n.initial:
                kind = kinds.get(n.node_id, "?")
                launched[kind] = launched.get(kind, 0) + 1
                if n.dead_at is not None:
                    released[kind] = released.get(kind, 0) + 1
        stored = stored_files(storage, name) if rc == 0 else []
        head_type = cluster.head_type
        per_node = max((t.trials_per_node(res["cpu"], res["gpu"], res["custom"]) for t in workers.values()),
                       default=0)
        report = RehearsalReport(
            cluster_file=str(cluster_file), node_types={head_type.name: head_type, **workers},
            trial_resources={"cpu": res["cpu"], "gpu": res["gpu"], **res["custom"]}, expected_per_node=per_node,
            idle_timeout_s=idle_timeout_s, configured_idle_timeout_min=config.get("idle_timeout_minutes", 5),
            obs=obs, study_start=study_start, study_end=study_end, driver_wall_s=driver_wall, driver_rc=rc,
            stored=stored, launched=launched, released=released, trials=trials)
        report.checks = checks(report, trials=trials, floor=floor, driver_log=work / "driver.log")
        if observer.errors:
            log(f"rehearse: {len(observer.errors)} polls failed, first: {observer.errors[0]}")
    return report


def checks(r: RehearsalReport, *, trials: int, floor: int, driver_log: Path) -> list[Check]:
    obs = r.obs
    out = []
    tail = driver_log.read_text(errors="replace")[-1500:] if driver_log.is_file() else ""
    out.append(Check("study finished", r.driver_rc == 0, f"driver exit {r.driver_rc}" + (
        "" if r.driver_rc == 0 else f"; log tail:\n{tail}")))
    placed = [t for t in obs.trials.values() if t.created_at is not None]
    out.append(Check("every trial was scheduled on the cluster", len(placed) >= trials,
                     f"{len(placed)} of {trials} trials got their resources on this cluster"))
    on_workers = [t for t in placed if t.node_id in obs.nodes]
    out.append(Check("trials ran on worker nodes only", len(on_workers) == len(placed),
                     f"{len(on_workers)} on workers, {len(placed) - len(on_workers)} elsewhere (head: CPU 0)"))
    autoscaled = {n.node_id for n in r.autoscaled()}
    waited = [t for t in placed if t.node_id in autoscaled and t.created_at - t.pending_at > 0]
    capacity = floor * r.expected_per_node
    need = trials > capacity
    out.append(Check("trials waited for, then landed on, autoscaled workers", (not need) or bool(waited),
                     f"{len(waited)} trials waited and ran on {len(autoscaled)} autoscaled worker(s); "
                     f"min_workers hold {capacity}"))
    packed = sorted(obs.packing.values(), reverse=True)
    full = trials >= r.expected_per_node
    out.append(Check("fractional GPU requests pack as declared",
                     bool(packed) and max(packed) == r.expected_per_node if full else max(packed, default=0) <= r.expected_per_node,
                     f"most trials at once per worker {packed}, declared {r.expected_per_node} per worker"))
    wanted = {"results.csv", "trials.csv", "study.json"}
    out.append(Check("results.csv, trials.csv, study.json reached the storage", wanted <= set(r.stored),
                     f"missing {sorted(wanted - set(r.stored))}" if not wanted <= set(r.stored) else "all three"))
    released = [n for n in r.autoscaled() if n.dead_at is not None]
    out.append(Check("idle autoscaled workers were released", len(released) == len(autoscaled),
                     f"{len(released)} of {len(autoscaled)} released; "
                     f"after {', '.join(f'{x:.1f}' for x in r.releases())} s idle"))
    kept = [n for n in obs.nodes.values() if n.initial and n.dead_at is None]
    out.append(Check("min_workers stay up", len(kept) >= floor, f"{len(kept)} of {floor} still up"))
    return out
