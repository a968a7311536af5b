"""The versions that produce a run: ``lth-tune --version``, study.json, the ``--resume`` warning, ``analyze``."""

import importlib.metadata
import json
import platform

import pytest

from lth_tune import cli
from lth_tune.config import study_from_dict
from lth_tune.versions import PACKAGES, produced_with, version_differences, versions


def test_versions_of_lth_tune_its_libraries_and_python():
    v = versions()
    assert list(v) == [*PACKAGES, "python"]
    assert list(v) == ["lth-tune", "ray", "optuna", "torch", "torchvision", "pyhessian", "python"]
    assert v["ray"] == importlib.metadata.version("ray") and v["python"] == platform.python_version()
    assert "not installed" not in v.values()


def test_version_option_prints_them_one_per_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [f"{k} {v}" for k, v in versions().items()]


def study():
    return study_from_dict({"name": "v", "search": {"space": {"train.lr": {"choice": [0.01, 0.1]}}}})


def test_study_json_records_them_and_resume_warns_per_differing_package(tmp_path, capsys):
    from lth_tune.tune.sweep import STUDY_FILE, check_resume, write_study

    write_study(study(), tmp_path, None)
    record = json.loads((tmp_path / STUDY_FILE).read_text())
    assert record["versions"] == versions()
    check_resume(study(), tmp_path, resume=True)
    assert capsys.readouterr().err == ""  # same versions: nothing to say

    record["versions"].update(ray="2.59.0", optuna="4.0.0")
    (tmp_path / STUDY_FILE).write_text(json.dumps(record))
    check_resume(study(), tmp_path, resume=True)  # a warning, not an error
    err = capsys.readouterr().err.splitlines()
    assert err == [f"lth-tune: warning: --resume: {name} {versions()[name]} here, {was} in the run being continued "
                   f"({tmp_path / STUDY_FILE})" for name, was in (("ray", "2.59.0"), ("optuna", "4.0.0"))]

    del record["versions"]  # written before lth-tune recorded versions
    (tmp_path / STUDY_FILE).write_text(json.dumps(record))
    check_resume(study(), tmp_path, resume=True)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "records no versions" in err[0]


def test_differences_name_packages_present_on_one_side_only():
    now = {"ray": "2.60.0", "python": "3.11.7"}
    assert version_differences(now, now) == []
    assert version_differences({"ray": "2.60.0"}, now) == ["python 3.11.7 here, not installed in the run being continued"]


def test_analyze_shows_them(tmp_path, monkeypatch, capsys):
    from analysis import report
    from lth_tune.tune.sweep import write_study

    monkeypatch.setattr(report, "per_experiment", lambda *a, **k: [])
    monkeypatch.setattr(report, "run_flatness_analyses", lambda *a, **k: [])
    monkeypatch.setattr(report, "annotate", lambda *a, **k: None)
    for name in ("a", "b"):
        write_study(study(), tmp_path / name, None)
        (tmp_path / name / "results.csv").write_text("trial_id,level\nt,0\n")
    record = json.loads((tmp_path / "b" / "study.json").read_text())
    del record["versions"]
    (tmp_path / "b" / "study.json").write_text(json.dumps(record))

    report.analyze_experiment(tmp_path / "a")
    assert capsys.readouterr().out.splitlines()[0] == produced_with(versions())
    report.analyze_experiment([tmp_path / "a", tmp_path / "b"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"a: produced with: lth-tune {versions()['lth-tune']}, ray {versions()['ray']}, " \
        f"optuna {versions()['optuna']}, torch {versions()['torch']}, torchvision {versions()['torchvision']}, " \
        f"pyhessian {versions()['pyhessian']}, python {platform.python_version()}"
    assert lines[1].startswith("b: produced with: versions not recorded")
