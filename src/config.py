"""Typed, validated params.yaml and the project's paths.

Every stage loads its section through `load()`, so a misspelled key, a wrong type or an
out-of-range value fails before any work starts, with the key's dotted name in the message.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from errors import PipelineError

ROOT = Path(__file__).resolve().parent.parent
PARAMS_FILE = ROOT / "params.yaml"
RAW_DIR = ROOT / "data" / "raw"
PROCESSED_DIR = ROOT / "data" / "processed"
MODELS_DIR = ROOT / "models"
REPORTS_DIR = ROOT / "reports"

PositiveInt = Annotated[int, Field(gt=0)]
Rate = Annotated[float, Field(ge=0.0, lt=1.0)]


class Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FetchParams(Strict):
    mirrors: list[str] = Field(min_length=1)
    retries: Annotated[int, Field(ge=0, le=10)]
    timeout_s: Annotated[float, Field(gt=0)]


class PreprocessParams(Strict):
    val_size: Annotated[int, Field(ge=10, le=30_000)]
    scale: Literal["unit", "standardize"]


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
    dense: list[Annotated[int, Field(ge=1, le=8192)]] = []
    conv_activation: Literal["relu", "tanh", "elu", "gelu", "swish"] = "relu"
    dense_activation: Literal["relu", "tanh", "elu", "gelu", "swish"] = "relu"
    dense_dropout: Rate = 0.0


class TrainParams(Strict):
    preset: Literal["seed_a", "seed_b", "seed_c", "seed_d"] | None
    model: ModelSpec
    optimizer: Literal["adam", "adamw", "rmsprop", "sgd"]
    learning_rate: Annotated[float, Field(gt=0, le=1)]
    lr_schedule: Literal["constant", "cosine"]
    warmup_epochs: Annotated[float, Field(ge=0)] = 0.0
    batch_size: Annotated[int, Field(ge=1, le=8192)]
    epochs: Annotated[int, Field(ge=1, le=500)]


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


class ParamsError(PipelineError):
    """params.yaml is missing, unparsable or invalid; the message says which key and why."""


def load(path: Path = PARAMS_FILE, overrides: Sequence[str] = ()) -> Params:
    """Read and validate params.yaml, with `key.path=value` overrides applied first; raise
    ParamsError naming every bad key."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as err:
        raise ParamsError(f"{path} not found: run from a checkout of the project") from err
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from err
    for override in overrides:
        _apply(raw, override)
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_describe(path, err)) from err


def _apply(tree: dict, override: str) -> None:
    """Set one `a.b.c=value` (value parsed as YAML, as `dvc exp run -S` does) in the raw tree."""
    key, sep, value = override.partition("=")
    if not sep or not key:
        raise ParamsError(f"override {override!r} is not KEY=VALUE, e.g. train.epochs=3")
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise ParamsError(f"override {override!r}: {part} is not a section of params.yaml")
    node[leaf] = yaml.safe_load(value)


def load_from_cli(description: str, argv: Sequence[str] | None = None) -> Params:
    """params.yaml plus any `-S key=value` from the command line (MLproject entry points use it)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "-S",
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a params.yaml value for this run only, e.g. train.epochs=3",
    )
    return load(overrides=parser.parse_args(argv).set)


def _describe(path: Path, err: ValidationError) -> str:
    lines = [f"{path.name} is invalid:"]
    for problem in err.errors():
        key = ".".join(str(part) for part in problem["loc"])
        reason = (
            "unknown key (check its spelling)"
            if problem["type"] == "extra_forbidden"
            else problem["msg"]
        )
        lines.append(f"  {key}: {reason}")
    return "\n".join(lines)
