"""params.yaml is validated at load: bad keys, types and ranges are named before work starts."""

from __future__ import annotations

import re

import pytest

from conftest import REPO, run_stage, update_params
from ml import config


def test_the_repository_params_yaml_is_valid():
    params = config.load(REPO / "params.yaml")
    assert params.train.epochs >= 1


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"train": {"epoch": 3}}, "train.epoch: unknown key (check its spelling)"),
        ({"train": {"epochs": "three"}}, "train.epochs: Input should be a valid integer"),
        ({"train": {"epochs": 0}}, "train.epochs: Input should be greater than or equal to 1"),
        ({"train": {"epochs": True}}, "train.epochs: Input should be a valid integer"),
        ({"train": {"epochs": 2.5}}, "train.epochs: Input should be a valid integer"),
        ({"fetch": {"retries": False}}, "fetch.retries: Input should be a valid integer"),
        ({"train": {"optimizer": "adamax"}}, "train.optimizer: Input should be 'adam', 'adamw'"),
        ({"train": {"preset": "seed_z"}}, "train.preset: Input should be 'seed_a'"),
        ({"preprocess": {"val_size": 1}}, "preprocess.val_size: Input should be greater than or"),
        ({"train": {"augment": {"shift": 0.5}}}, "train.augment.shift: Input should be less than"),
    ],
)
def test_invalid_params_are_named_with_what_is_allowed(project, change, expected):
    update_params(project, change)
    with pytest.raises(config.ParamsError) as err:
        config.load(project / "params.yaml")
    assert expected in str(err.value)


def test_a_bad_block_inside_the_model_spec_is_named_by_its_index(project):
    params = (project / "params.yaml").read_text().replace("kernel_size: 5", "kernel_size: 50", 1)
    (project / "params.yaml").write_text(params)
    with pytest.raises(config.ParamsError, match=r"train\.model\.blocks\.0\.kernel_size"):
        config.load(project / "params.yaml")


def test_unparsable_yaml_is_reported_as_such(project):
    (project / "params.yaml").write_text("train: [unclosed\n")
    with pytest.raises(config.ParamsError, match="is not valid YAML"):
        config.load(project / "params.yaml")


def test_a_stage_refuses_bad_params_before_doing_any_work(project, mirror):
    (project / "data").mkdir(exist_ok=True)
    (project / "data" / "raw").symlink_to(mirror[0])
    update_params(project, {"preprocess": {"scale": "minmax"}})
    result = run_stage(project, "preprocess")  # its input is there: only the params can stop it
    assert result.returncode == 1
    assert "preprocess.scale: Input should be 'unit' or 'standardize'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / "data" / "processed").exists()


def test_a_search_dimension_with_no_choices_is_named(project):
    space = {"train.epochs": {"choices": []}}
    update_params(project, {"tune": {"space": space}})
    with pytest.raises(
        config.ParamsError, match=re.escape("tune.space.train.epochs.choices: List should")
    ):
        config.load(project / "params.yaml")


def test_command_line_overrides_apply_before_validation():
    params = config.load(overrides=["train.epochs=3", "train.model.dense=[64, 32]", "seed=7"])
    assert (params.train.epochs, params.train.model.dense, params.seed) == (3, [64, 32], 7)


def test_overrides_reach_into_the_search_space_whose_keys_hold_dots():
    params = config.load(
        overrides=[
            "tune.space.train.epochs.high=14",
            "tune.space.train.batch_size={choices: [64, 256]}",
        ]
    )
    space = params.tune.space
    assert (space["train.epochs"].low, space["train.epochs"].high) == (12, 14)
    assert space["train.batch_size"].choices == [64, 256]
    assert params.train.epochs == config.load().train.epochs  # the searched key is untouched


def test_a_misspelled_dimension_in_an_override_lists_the_dimensions_there_are():
    with pytest.raises(config.ParamsError) as raised:
        config.load(overrides=["tune.space.train.epoch.high=14"])
    said = str(raised.value)
    dimensions = ", ".join(config.load().tune.space)  # params.yaml's own
    assert said.endswith(
        f"\n  tune.space.train.epoch.high: not a search dimension ({{low, high[, log]}} "
        f"or {{choices: [...]}}); to change a bound, name one of the dimensions: {dimensions}"
    )


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epoch=3", "train.epoch: unknown key"),
        ("seed.x=1", "seed is not a section"),
        ("train.model.blocks.7.filters=8", "7 is not a section"),
        ("train.epochs", "is not KEY=VALUE"),
    ],
)
def test_bad_overrides_are_named(override, expected):
    with pytest.raises(config.ParamsError, match=expected):
        config.load(overrides=[override])


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ("{train.model.blocks.1.conv: {choices: [1, 2]}}", "blocks.1.conv=1: unknown key"),
        ("{train.model.blocks.1.convs: {choices: [1, 5]}}", "convs=5: Input should be less than"),
        ("{train.model.blocks.4.filters: {low: 8, high: 16}}", "4 is not a section"),
        ("{train.epochs: {low: 0, high: 3}}", "train.epochs=0: Input should be greater than"),
        ("{preprocess.scale: {choices: [unit]}}", "preprocess.scale: only train.* keys"),
        ("{train.epochs: {low: 12.5, high: 30}}", "train.epochs=12.5: Input should be a valid int"),
    ],
)
def test_a_search_space_that_cannot_make_valid_params_is_named(space, expected):
    with pytest.raises(config.ParamsError, match=f"\n  tune.space: .*{re.escape(expected)}"):
        config.load(overrides=[f"tune.space={space}"])
