import itertools

import pytest
from pydantic import ValidationError

from lth_tune.config import ExperimentConfig, GridParam, StudyError, load_study, study_from_dict


def write(tmp_path, text):
    p = tmp_path / "study.yaml"
    p.write_text(text)
    return p


def test_shipped_studies_validate():
    from pathlib import Path

    files = sorted(Path(__file__).parents[1].glob("search_spaces/**/*.yaml"))
    assert files, "no study files shipped"
    for f in files:
        study = load_study(f)
        assert study.search.grid_size() >= 1


def test_l2init_grid_includes_zero_and_two_lrs():
    study = load_study("search_spaces/l2init.yaml")
    grid = study.search.grid()
    lams = grid["regularizer.lam"]
    assert lams[0] == 0.0 and len(lams) >= 4
    assert all(b > a for a, b in itertools.pairwise(lams))
    assert len(grid["train.lr"]) == 2
    assert study.experiment.regularizer.kind == "l2_init"
    assert grid["regularizer.kind"] == ["l2_init", "l2_norm"]
    assert (1 - study.experiment.pruning.fraction) ** study.experiment.pruning.levels <= 0.2
    assert study.search.grid_size() == len(lams) * 2 * 2 * len(grid["seed"])


def test_log_grid_values():
    p = GridParam(log=(1e-4, 1e-1), points=4, include_zero=True)
    assert p.values() == [0.0, 1e-4, 1e-3, 1e-2, 1e-1]
    assert GridParam(linear=(0.2, 0.8), points=4).values() == pytest.approx([0.2, 0.4, 0.6, 0.8])


@pytest.mark.parametrize(
    "text, key",
    [
        ("experiment: {train: {lrr: 0.1}}", "experiment.train.lrr"),
        ("experiment: {regularizer: {kind: l2_init, lam: -1}}", "experiment.regularizer.lam"),
        ("experiment: {model: {name: resnet99}}", "experiment.model.name"),
        ("experiment: {pruning: {fraction: 1.0}}", "experiment.pruning.fraction"),
        ("experiment: {train: {lr: fast}}", "experiment.train.lr"),
        ("search: {space: {train.lr: {log: [0.001, 0.1]}}}", "points"),
        ("search: {space: {train.nope: {choice: [1, 2]}}}", "search.space.train.nope"),
        ("search: {space: {regularizer.lam: {choice: [0.0, -0.1]}}}", "search.space.regularizer.lam"),
        ("bogus: 1", "bogus"),
    ],
)
def test_invalid_study_names_the_key(tmp_path, text, key):
    with pytest.raises(StudyError) as err:
        load_study(write(tmp_path, text))
    msg = str(err.value)
    assert key in msg and "\n" not in msg


@pytest.mark.parametrize("text", ["", "\n# only a comment\n", "{}"])
def test_empty_study_file_is_an_error(tmp_path, text):
    with pytest.raises(StudyError, match="empty") as err:
        load_study(write(tmp_path, text))
    assert "\n" not in str(err.value)


def test_validate_empty_study_exits_2(tmp_path, capsys):
    from lth_tune.cli import main

    assert main(["validate", str(write(tmp_path, ""))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lth-tune: error:") and "empty" in err and err.count("\n") == 1


def test_model_option_the_family_does_not_take(tmp_path):
    with pytest.raises(StudyError, match="experiment.model: model 'conv1d' does not take widths"):
        load_study(write(tmp_path, "experiment: {model: {name: conv1d, widths: [10]}}"))


def test_malformed_yaml(tmp_path):
    with pytest.raises(StudyError, match="malformed YAML"):
        load_study(write(tmp_path, "experiment: [unclosed"))


def test_overrides_apply_and_validate(tmp_path):
    path = write(tmp_path, "experiment: {train: {lr: 0.1}}")
    study = load_study(path, ["experiment.train.lr=0.01", "experiment.pruning.levels=2"])
    assert study.experiment.train.lr == 0.01 and study.experiment.pruning.levels == 2
    study = load_study(path, ["search.space.train.lr={choice: [0.01, 0.1]}"])
    assert study.search.grid() == {"train.lr": [0.01, 0.1]}
    with pytest.raises(StudyError, match="experiment.train.lr"):
        load_study(path, ["experiment.train.lr=-3"])
    with pytest.raises(StudyError, match="key=value"):
        load_study(path, ["experiment.train.lr"])


def test_with_params_substitutes_and_revalidates():
    cfg = ExperimentConfig()
    new = cfg.with_params({"train.lr": 0.5, "regularizer.lam": 1e-3})
    assert new.train.lr == 0.5 and new.regularizer.lam == 1e-3 and cfg.train.lr == 0.1
    with pytest.raises(ValidationError, match="train.lr"):
        cfg.with_params({"train.lr": -1})


def test_milestones_must_fit_epochs():
    with pytest.raises(StudyError, match="milestones"):
        study_from_dict({"name": "x", "experiment": {"train": {"epochs": 5, "milestones": [10]}}})


def test_bound_config_prior_sigmas_validation():
    from lth_tune.config import BoundConfig

    assert BoundConfig(prior_sigmas=[0.1, 0.3]).prior_sigmas == [0.1, 0.3]
    assert BoundConfig(prior_sigmas=[0.1, 0.3]).sigma_grid() == [0.1, 0.3]
    assert BoundConfig(prior_sigma=0.2).sigma_grid() == [0.2]
    for bad in ([], [0.1, 0.1], [0.1, -1.0], [float("inf")]):
        with pytest.raises(ValueError, match="prior_sigmas"):
            BoundConfig(prior_sigmas=bad)
