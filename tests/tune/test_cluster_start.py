"""The sweep's own local cluster, started in a background thread (:class:`lth_tune.tune.sweep.ClusterStart`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lth_tune.tune import sweep
from lth_tune.tune.sweep import ClusterStart

pytestmark = pytest.mark.e2e


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of a live process, from /proc; None once it is gone (or a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[1]), fields[0]) if fields[0] != "Z" else None


def _ray_processes(names: tuple[str, ...] = ("gcs_server", "raylet")) -> list[int]:
    """This process's descendants whose command line names one of ``names`` (default: Ray's GCS and raylet)."""
    parents = {int(p.name): st[0] for p in Path("/proc").iterdir() if p.name.isdigit() and (st := _stat(int(p.name)))}
    mine, grew = {os.getpid()}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in mine} - mine
        mine |= more
        grew = bool(more)
    out = []
    for pid in mine - {os.getpid()}:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if any(name in cmd for name in names):
            out.append(pid)
    return out


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if _stat(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def test_cluster_started_in_the_background_serves_the_driver_until_stopped():
    import ray

    assert not ray.is_initialized()
    cluster = ClusterStart(None, verbose=0)
    try:
        cluster.wait()
        processes = _ray_processes()
        assert len(processes) >= 2  # GCS and raylet, children of this process
        monitor = _ray_processes(("autoscaler/_private/monitor.py",))
        assert len(monitor) == 1

        @ray.remote(num_cpus=1)
        def pid() -> int:
            return os.getpid()

        # the thread that started Ray is still alive: Linux kills a process started with a parent-death signal
        # when the *thread* that started it ends, and the cluster would be gone by now
        assert ray.get(pid.remote(), timeout=60) != os.getpid()
        assert all(_stat(p) for p in processes)
    finally:
        cluster.stop()
    assert not ray.is_initialized()
    assert not _wait_gone(processes + monitor, timeout=30)


def test_an_error_of_the_start_is_raised_by_wait(monkeypatch):
    import ray

    def fail(self):
        raise RuntimeError("no cluster today")

    monkeypatch.setattr(ClusterStart, "_init", fail)
    cluster = ClusterStart(None, verbose=0)
    with pytest.raises(RuntimeError, match="no cluster today"):
        cluster.wait()
    cluster.stop()  # nothing to shut down
    assert not ray.is_initialized()


def test_the_monitor_is_killed_before_ray_shuts_down_the_gcs(monkeypatch):
    """Ray's own order stops the GCS first and the monitor then hangs a second reporting to it."""
    import ray

    calls = []

    class Node:
        def kill_monitor(self, check_alive=True):
            calls.append(("kill_monitor", check_alive))

    monkeypatch.setattr(ray._private.worker, "_global_node", Node())
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append(("shutdown", None)))
    sweep.shutdown_cluster()
    assert calls == [("kill_monitor", False), ("shutdown", None)]

    calls.clear()
    sweep.shutdown_cluster(monitor_first=False)  # PREVIOUS_ENGINE: Ray's own order
    assert calls == [("shutdown", None)]

    calls.clear()
    monkeypatch.setattr(ray._private.worker, "_global_node", None)  # a driver that joined a cluster: nothing to kill
    sweep.shutdown_cluster()
    assert calls == [("shutdown", None)]


@pytest.mark.parametrize("address,own", [(None, True), ("local", True), ("10.0.0.1:6379", False)])
def test_idle_workers_are_turned_off_only_on_a_cluster_started_here(monkeypatch, address, own):
    """A fresh local cluster starts no default worker processes; a joined cluster keeps its own configuration
    (ray.init refuses a _system_config when it connects)."""
    seen = {}
    monkeypatch.setattr(ClusterStart, "_init", lambda self: seen.update(self._kwargs))
    ClusterStart(address, verbose=0, background=False)
    assert ("_system_config" in seen) is own
    if own:
        assert seen["_system_config"] == {"prestart_worker_first_driver": False}
    seen.clear()
    ClusterStart(address, verbose=0, background=False, no_idle_workers=False)
    assert "_system_config" not in seen


def _workers() -> list[int]:
    """Ray worker processes of this process's cluster: an idle one is titled ``ray::IDLE``, one still booting runs
    ``default_worker.py`` (the raylet's own command line names that script too, as an argument)."""
    out = []
    for pid in _ray_processes(("default_worker.py", "ray::IDLE")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv[0].startswith("ray::IDLE") or (len(argv) > 1 and argv[1].endswith("default_worker.py")):
            out.append(pid)
    return out


def _trial_pid(tmp_path) -> int:
    """The process a one-step Tune trial ran in."""
    from ray import tune

    def trainable(config):
        tune.report({"pid": os.getpid()})

    grid = tune.Tuner(trainable, run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0)).fit()
    return int(grid[0].metrics["pid"])


def test_tune_trials_never_run_in_the_default_workers_so_none_are_started(tmp_path):
    """Why ``no_idle_workers``: with Ray's default, the worker processes started when the driver connects sit idle
    while Tune's trial (an actor with Tune's runtime environment) gets a process of its own; turned off, no worker
    process exists until a trial asks for one, and the trial still runs."""
    cluster = ClusterStart(None, verbose=0, no_idle_workers=False)
    try:
        cluster.wait()
        deadline = time.monotonic() + 30
        while not (idle := _workers()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert idle, "Ray's default: worker processes once the driver connects"
        assert _trial_pid(tmp_path / "default") not in idle
    finally:
        cluster.stop()

    cluster = ClusterStart(None, verbose=0)
    try:
        cluster.wait()
        time.sleep(3)  # the default workers above appeared within a second or two
        assert not _workers()
        assert _trial_pid(tmp_path / "off") > 0
    finally:
        cluster.stop()
