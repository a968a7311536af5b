"""`lth-tune flatness CHECKPOINT` on a saved IMP level."""

import json

import torch

from lth_tune.cli import main
from lth_tune.config import ExperimentConfig
from lth_tune.pruning import snapshot
from lth_tune.runs import IMPRun

CHECKPOINT_FILE = IMPRun.CHECKPOINT_FILE


def test_flatness_cli_on_a_level_checkpoint(tmp_path, data_root):
    cfg = ExperimentConfig.model_validate({
        "data": {"dataset": "mnist1d", "root": data_root, "train_subset": 300},
        "model": {"name": "mlp", "widths": [16]}, "train": {"epochs": 1}, "pruning": {"levels": 1},
        "flatness": {"method": "fast", "n_batches": 1, "batch_size": 200},
    })
    run = IMPRun(cfg, device="cpu")
    run.run()
    ckpt = tmp_path / "checkpoint_000001"
    ckpt.mkdir()
    torch.save(run.state_dict(), ckpt / CHECKPOINT_FILE)
    weights = {k: v.clone() for k, v in snapshot(run.model).items()}
    assert main(["flatness", str(ckpt), "--out", str(tmp_path / "out"), "--sharpness-sigma", "0.01"]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["hessian_trace"] > 0 and metrics["hessian_top_eig"] > 0
    assert metrics["density"] == run.history[-1]["density"] and metrics["level"] == 1
    assert (tmp_path / "out" / "landscape.png").stat().st_size > 1000
    losses = json.loads(metrics["landscape_losses"])
    mid = len(losses) // 2
    # along the top Hessian eigenvector (eigenvalue > 0) the slice curves upwards at the ticket
    assert losses[mid - 1] + losses[mid + 1] > 2 * losses[mid]
    assert metrics["landscape_loss0"] == losses[mid]
    # the checkpoint is untouched
    again = torch.load(ckpt / CHECKPOINT_FILE, weights_only=True)["weights"]
    assert all(torch.equal(again[k], weights[k]) for k in weights)
