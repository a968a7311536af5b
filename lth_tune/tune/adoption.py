"""A trial's identity from its grid point: the finished steps of a trial that a crashed driver lost are adopted
by the trial that replaces it, never recomputed and never duplicated.

After a driver crash Tune restores the trials of its last experiment-state save. A trial started after that save
is unknown to the restored driver, which asks its searcher again; the searcher, restored to the same moment,
suggests the same grid point again, under a new trial id. A trial the save knew but had no checkpoint of yet is
restarted from scratch. Either way the trial's checkpoints are still in storage (``trial_<id>/checkpoint_*``).
The trial's identity is its experiment configuration (the study's experiment with the grid point substituted):
:func:`identity`. On the first controller step of a resumed sweep the driver (``ResultsTable``) reads the newest
checkpoint of every trial directory Tune does not know or knows without a checkpoint (unfinished) and writes
``adoptable.json`` next to ``results.csv``: identity → that checkpoint. A new trial without a Tune checkpoint looks
its identity up there (``sweep --resume`` hands the trainable the file's location); when it finds one it resumes
from that checkpoint and reports the adopted run's history first (those results carry no new computation: the
rows the crashed driver had are dropped with the lost trial's id and come back under the new one, once), then
continues. Everything here reads and writes through pyarrow, so it works on a bucket as on a local directory.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ADOPTABLE_FILE = "adoptable.json"
_CHECKPOINT_DIR = re.compile(r"^checkpoint_(\d+)$")
_TRIAL_DIR = "trial_"


def identity(experiment: dict[str, Any]) -> str:
    """SHA-256 of a trial's experiment configuration (``ExperimentConfig.model_dump(mode="json")``)."""
    return hashlib.sha256(json.dumps(experiment, sort_keys=True, default=str).encode()).hexdigest()


def filesystem(location: str | Path):
    """(pyarrow filesystem, path) of a local directory or a URI (``s3://…``, ``gs://…``, ``file://…``)."""
    import pyarrow.fs

    location = str(location)
    if "://" in location:
        fs, path = pyarrow.fs.FileSystem.from_uri(location)
        return fs, path.rstrip("/")
    return pyarrow.fs.LocalFileSystem(), str(Path(location).expanduser().resolve())


def _read_state(fs, path: str) -> dict[str, Any]:
    import torch

    with fs.open_input_file(path) as f:
        return torch.load(io.BytesIO(f.read()), weights_only=True, map_location="cpu")


def _newest_checkpoint(fs, trial_dir: str) -> str | None:
    import pyarrow.fs

    found = []
    for info in fs.get_file_info(pyarrow.fs.FileSelector(trial_dir, allow_not_found=True)):
        m = _CHECKPOINT_DIR.match(info.base_name)
        if m and info.type == pyarrow.fs.FileType.Directory:
            found.append((int(m.group(1)), info.path))
    return max(found)[1] if found else None


def lost_checkpoints(location: str | Path, skip: set[str], state_files: list[str]) -> dict[str, dict[str, Any]]:
    """identity → ``{"checkpoint": path relative to location, "file": state file, "steps": steps done}``: the newest
    checkpoint of every ``trial_<id>`` directory under ``location`` whose id is not in ``skip`` (trials Tune resumes
    from a checkpoint of its own, or finished), the most advanced one when several share an identity."""
    import pyarrow.fs

    fs, root = filesystem(location)
    out: dict[str, dict[str, Any]] = {}
    for info in fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True)):
        name = info.base_name
        if info.type != pyarrow.fs.FileType.Directory or not name.startswith(_TRIAL_DIR):
            continue
        if name.removeprefix(_TRIAL_DIR) in skip:
            continue
        checkpoint = _newest_checkpoint(fs, info.path)
        if checkpoint is None:
            continue
        for file in state_files:
            path = f"{checkpoint}/{file}"
            if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
                continue
            try:
                state = _read_state(fs, path)
            except Exception as err:  # noqa: BLE001 - a torn or foreign file: that trial is recomputed instead
                logger.warning("adoption: cannot read %s (%s); its trial will be recomputed", path, err)
                break
            key, steps = identity(state["config"]), len(state.get("history", []))
            if key not in out or steps > out[key]["steps"]:
                out[key] = {"checkpoint": checkpoint[len(root):].lstrip("/"), "file": file, "steps": steps}
            break
    return out


def write_adoptable(location: str | Path, lost: dict[str, dict[str, Any]]) -> None:
    """``location/adoptable.json`` (replaced whole: a resumed driver's view of what is adoptable)."""
    fs, root = filesystem(location)
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(f"{root}/{ADOPTABLE_FILE}") as out:
        out.write(json.dumps(lost, indent=1, sort_keys=True).encode())


def adoptable_state(location: str | Path, experiment: dict[str, Any]) -> dict[str, Any] | None:
    """The run state of a lost trial with this experiment configuration, or None (no file, no match)."""
    import pyarrow.fs

    fs, root = filesystem(location)
    path = f"{root}/{ADOPTABLE_FILE}"
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_file(path) as f:
        entry = json.loads(f.read()).get(identity(experiment))
    if entry is None:
        return None
    try:
        state = _read_state(fs, f"{root}/{entry['checkpoint']}/{entry['file']}")
    except Exception as err:  # noqa: BLE001 - deleted or torn since the driver looked: recompute
        logger.warning("adoption: cannot read %s (%s); recomputing", entry["checkpoint"], err)
        return None
    return state if identity(state["config"]) == identity(experiment) else None
