"""Every paper-scale study file runs end to end: the real CLI and Ray Tune on synthetic data written in the
dataset's real on-disk format, shrunk with ``--smoke`` (one grid point, one epoch, one level), then
``lth-tune analyze``. The list is the directory: a new file in search_spaces/paper/ is tested without
being named here."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from lth_tune.cli import main
from lth_tune.config import load_study

from ..data.formats import write_cifar10, write_cifar100, write_mnist

pytestmark = pytest.mark.e2e

PAPER = Path(__file__).resolve().parents[2] / "search_spaces" / "paper"
FILES = sorted(PAPER.glob("*.yaml"))
#: besides each file's first grid point: the other models and datasets a file's grid declares
EXTRA = {"table1_sgd.yaml": ["search.space.model.name={choice: [vgg16]}",
                             "search.space.data.dataset={choice: [cifar100]}"]}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One local Ray cluster for every study (its workers trust the synthetic CIFAR files), and the data."""
    import ray

    root = tmp_path_factory.mktemp("paper_data")
    write_mnist(root, "MNIST", n_train=160, n_test=40)
    write_mnist(root, "FashionMNIST", n_train=160, n_test=40)
    write_cifar10(root, per_batch=32, n_test=40)
    write_cifar100(root, n_train=160, n_test=40)

    def _trust_synthetic_cifar():  # nested, so Ray pickles it by value into every worker
        """torchvision checks the md5 of the real CIFAR files; the synthetic ones only need to exist."""
        import os

        from torchvision.datasets import cifar

        cifar.check_integrity = lambda fpath, md5=None: os.path.isfile(fpath)

    _trust_synthetic_cifar()
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"worker_process_setup_hook": _trust_synthetic_cifar,
                                                                "env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        yield root
    finally:
        ray.shutdown()


def test_the_paper_directory_holds_a_study_for_every_table_and_figure():
    names = {f.stem for f in FILES}
    for needed in ("fig1_label_noise_resnet20_cifar10", "fig1_label_noise_vgg16_cifar10", "fig2_landscape_resnet20_cifar10",
                   "fig2_landscape_vgg16_cifar10", "table1_sgd", "table1_sam", "table1_nvrm", "l2init_resnet20_cifar10",
                   "bound_resnet20_cifar10", "pft_mnist", "pft_fashion_mnist", "pft_cifar10", "pbp_mnist",
                   "pbp_fashion_mnist", "pbp_cifar10"):
        assert needed in names
    for f in FILES:  # every header states its cost (bench/paper_plans.py --write-headers)
        assert "# plan: " in f.read_text(), f"{f.name}: run python bench/paper_plans.py --write-headers"


CASES = [(f, []) for f in FILES] + [(PAPER / name, [o]) for name, extra in EXTRA.items() for o in extra]


@pytest.mark.parametrize("path, extra", CASES, ids=[f"{p.stem}{'+' + e[0].split('=')[0].split('.')[-1] if e else ''}"
                                                   for p, e in CASES])
def test_paper_study_runs_end_to_end(cluster, tmp_path, path, extra, capsys):
    out = tmp_path / "results"
    args = ["sweep", str(path), "--smoke", "-v", "0", "--set", f"experiment.data.root={cluster}",
            "--set", f"output.dir={out}"] + [a for o in extra for a in ("--set", o)]
    assert main(args) == 0, capsys.readouterr().err
    name = load_study(path).name + "_smoke"
    exp = out / name
    df = pd.read_csv(exp / "results.csv")
    trials = pd.read_csv(exp / "trials.csv", keep_default_na=False)
    assert (trials["status"] == "TERMINATED").all(), trials["error"].tolist()
    study = json.loads((exp / "study.json").read_text())
    kind = study["study"]["experiment"]["kind"]
    if kind == "pbp":
        assert sorted(df["stage"].unique()) == [1, 2, 3]
    else:
        assert sorted(df.loc[df["branch"] == "ticket", "level"].unique()) == [0, 1]
        declared = load_study(path).experiment
        if declared.flatness.levels != "none":
            assert df["hessian_trace"].notna().any()
        if declared.bound.levels != "none":
            assert df["ss_bound"].notna().any() and df["gauss_bound"].notna().any()
        if declared.controls.kinds:
            assert set(declared.controls.kinds) <= set(df["branch"])
    assert main(["analyze", str(exp)]) == 0
    assert any((exp / "analysis").glob("*.png"))
