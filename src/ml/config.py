"""Typed, validated params.yaml.

Every stage loads its section through `load()`, so a misspelled key, a wrong type or an
out-of-range value fails before any work starts, with the key's dotted name in the message.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from common import paths, redact
from common.errors import PipelineError
from ml import params_errors
from ml.params_types import Rate, Strict
from ml.tune_params import TuneParams


class FetchParams(Strict):
    mirrors: list[str] = Field(min_length=1)
    retries: Annotated[int, Field(ge=0, le=10)]
    timeout_s: Annotated[float, Field(gt=0)]
    deadline_s: Annotated[float, Field(gt=0)]
    min_rate_bps: Annotated[float, Field(ge=0)]


class PreprocessParams(Strict):
    val_size: Annotated[int, Field(ge=10, le=30_000)]
    scale: Literal["unit", "standardize"]
    feedback: Literal["off", "evaluate", "train"] = "off"

    @field_validator("feedback", mode="before")
    @classmethod
    def bare_off(cls, value: object) -> object:
        """YAML 1.1 (PyYAML, and so `dvc exp run -S preprocess.feedback=off`) reads `off` as
        false."""
        return "off" if value is False else value


class ConvBlock(Strict):
    filters: Annotated[int, Field(ge=1, le=1024)]
    kernel_size: Annotated[int, Field(ge=1, le=9)] = 3
    padding: Literal["valid", "same"] = "valid"
    convs: Annotated[int, Field(ge=1, le=4)] = 1
    batch_norm: bool = False
    pool: bool = True
    dropout: Rate = 0.0


class ModelSpec(Strict):
    blocks: list[ConvBlock] = Field(min_length=1)
    dense: list[Annotated[int, Field(ge=1, le=8192)]] = Field(default_factory=list)
    conv_activation: Literal["relu", "tanh", "elu", "gelu", "swish"] = "relu"
    dense_activation: Literal["relu", "tanh", "elu", "gelu", "swish"] = "relu"
    dense_dropout: Rate = 0.0


class Augment(Strict):
    """Random affine distortions of each training batch; inference sees the images untouched."""

    shift: Annotated[float, Field(ge=0.0, le=0.3)] = 0.0  # up to this fraction of the side
    rotate_deg: Annotated[float, Field(ge=0.0, le=45.0)] = 0.0  # up to this many degrees


Precision = Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"]


class TrainParams(Strict):
    preset: Literal["seed_a", "seed_b", "seed_c", "seed_d"] | None
    model: ModelSpec
    augment: Augment = Augment()
    optimizer: Literal["adam", "adamw", "rmsprop", "sgd"]
    learning_rate: Annotated[float, Field(gt=0, le=1)]
    lr_schedule: Literal["constant", "cosine"]
    warmup_epochs: Annotated[float, Field(ge=0)] = 0.0
    ema_momentum: Annotated[float, Field(gt=0, lt=1)] | None = None  # None: no weight averaging
    # Soft targets: 1 - s + s/10 on the true digit, s/10 on each other one (0: the labels as is).
    label_smoothing: Annotated[float, Field(ge=0.0, lt=0.5)] = 0.0
    # Decoupled: each step shrinks the weights by learning rate x this (None: the optimizer's own).
    weight_decay: Annotated[float, Field(ge=0.0, lt=1.0)] | None = None
    batch_size: Annotated[int, Field(ge=1, le=8192)]
    epochs: Annotated[int, Field(ge=1, le=500)]
    precision: Precision = "auto"  # auto: per device and CPU (runtime.resolve_precision)
    backend: Literal["tensorflow", "jax", "torch"] = "tensorflow"  # set by common.keras_backend

    @property
    def arch(self) -> str:
        """The architecture's name, as runs are tagged: the preset's, or custom for `model`."""
        return self.preset or "custom"


class EvaluateParams(Strict):
    gallery_size: Annotated[int, Field(ge=1, le=100)]


class TrackingParams(Strict):
    experiment: str = Field(min_length=1)
    registered_model: str = Field(min_length=1)
    champion_floor: Annotated[float, Field(ge=0.0, le=1.0)]


class Params(Strict):
    seed: Annotated[int, Field(ge=0, lt=2**31)]
    fetch: FetchParams
    preprocess: PreprocessParams
    train: TrainParams
    evaluate: EvaluateParams
    tracking: TrackingParams
    tune: TuneParams

    @model_validator(mode="after")
    def _space_fits_train(self) -> Params:
        """A misspelled or out-of-range search dimension fails here, before a study starts,
        rather than in the first trial that draws it. Only train.* is searchable: trials reuse the
        preprocessed data, so any other key would be searched without effect."""
        for path, dim in self.tune.space.items():
            if not path.startswith("train."):
                raise ValueError(f"tune.space: {path}: only train.* keys can be searched")
            for value in dim.choices if dim.choices is not None else (dim.low, dim.high):
                _check_train_value(self.train, path, value)
        return self


def _check_train_value(train: TrainParams, path: str, value: Any) -> None:
    tree = {"train": train.model_dump()}
    try:
        set_path(tree, path, value)
        TrainParams.model_validate(tree["train"])
    except ParamsError as err:
        raise ValueError(f"tune.space: {err}") from err
    except ValidationError as err:
        raise ValueError(
            f"tune.space: {path}={value!r}: {params_errors.reason(err.errors()[0])}"
        ) from err


class ParamsError(PipelineError):
    """params.yaml is missing, unparsable or invalid; the message says which key and why."""


def load(
    path: Path = paths.PARAMS_FILE,
    overrides: Sequence[str] = (),
    values: Mapping[str, Any] | None = None,
) -> Params:
    """Read and validate params.yaml, with `key.path=value` overrides (and already parsed
    `values`, by the same dotted keys) applied first; raise ParamsError naming every bad key."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as err:
        raise ParamsError(f"{path} not found: run from a checkout of the project") from err
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from err
    for key, value in map(parse_override, overrides):
        set_path(raw, key, value)
    refuse_written_passwords(raw, path.name)  # the values tune.py's flags give are not written
    for key, value in (values or {}).items():
        set_path(raw, key, value)
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(params_errors.describe(path.name, err, raw)) from err


def refuse_written_passwords(raw: Any, source: str) -> None:
    """params.yaml is committed, and its values are logged to MLflow: a database password in
    tune.storage would reach every clone and every run. It names a variable instead."""
    tune = raw.get("tune") if isinstance(raw, dict) else None
    storage = tune.get("storage") if isinstance(tune, dict) else None
    if isinstance(storage, str) and redact.has_secret(storage):
        raise ParamsError(
            f"{source}: tune.storage holds a password, and params.yaml is committed and logged; "
            f"export the URL (export OPTUNA_STORAGE='{redact.uri(storage)}' with the password) "
            f'and write `storage: ${{OPTUNA_STORAGE}}`, or pass --storage "$OPTUNA_STORAGE"'
        )


def with_values(params: Params, values: Mapping[str, Any]) -> Params:
    """`params` with each dotted key set to its value, validated as params.yaml is: a trial's
    params are built in memory, never by reading the file again (it may have changed since)."""
    raw = params.model_dump()
    for key, value in values.items():
        set_path(raw, key, value)
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(params_errors.describe("the params", err, raw)) from err


def parse_override(override: str) -> tuple[str, Any]:
    """`a.b.0.c=value` -> ("a.b.0.c", value parsed as YAML, as `dvc exp run -S` does)."""
    key, sep, value = override.partition("=")
    if not sep or not key:
        raise ParamsError(f"override {override!r} is not KEY=VALUE, e.g. train.epochs=3")
    return key, yaml.safe_load(value)


def set_path(tree: Any, key: str, value: Any) -> None:
    """Set `value` at dotted `key` in nested dicts/lists (numbers index lists): a.b.0.c. A dict's
    own keys may hold dots (tune.space's keys are params paths); the longest one that matches is
    taken, so tune.space.train.epochs.high is `high` of the train.epochs dimension."""
    node, rest = tree, key.split(".")
    while len(rest) > 1 and (step := _step(node, rest, key)) is not None:
        node, rest = step
    if isinstance(node, list):
        leaf = rest[0]
        if len(rest) > 1 or not leaf.isdigit() or int(leaf) >= len(node):
            raise ParamsError(f"{key}: {leaf} is not an index of a {len(node)}-item list")
        node[int(leaf)] = value
    else:
        node[".".join(rest)] = value


def _step(node: dict | list, rest: list[str], key: str) -> tuple[Any, list[str]] | None:
    """One level down `rest`: the section it names and what is left, or None when the rest is
    a single (perhaps dotted, perhaps new) key of `node`."""
    if isinstance(node, list):
        head = rest[0]
        if head.isdigit() and int(head) < len(node) and isinstance(node[int(head)], dict | list):
            return node[int(head)], rest[1:]
        raise ParamsError(f"{key}: {head} is not a section of params.yaml")
    for taken in range(len(rest) - 1, 0, -1):
        child = node.get(".".join(rest[:taken]))
        if isinstance(child, dict | list):
            return child, rest[taken:]
    if rest[0] in node:  # a value, not a section: seed.x
        raise ParamsError(f"{key}: {rest[0]} is not a section of params.yaml")
    return None


def load_from_cli(description: str, argv: Sequence[str] | None = None) -> Params:
    """params.yaml plus any `-S key=value` from the command line (MLproject entry points use it)."""
    parser = argparse.ArgumentParser(description=description)
    add_set_option(parser)
    return load(overrides=given_overrides(parser.parse_args(argv).set))


def add_set_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-S",
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a params.yaml value for this run only, e.g. train.epochs=3 "
        "(KEY= with no value keeps params.yaml's: MLproject passes every parameter)",
    )


def given_overrides(items: Sequence[str]) -> list[str]:
    return [item for item in items if not item.endswith("=")]
