"""The Keras backend that trains and judges models: params.yaml's `train.backend`, set before
Keras loads.

Keras reads KERAS_BACKEND once, when first imported, and DVC never sees the environment: a
backend chosen there alone trains a model DVC believes it already has ("Stage 'train' didn't
change, skipping") and records nothing of it. The param is what DVC sees and dvc.lock records;
KERAS_BACKEND, where set, must agree with it.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from common import paths

BACKENDS = ("tensorflow", "jax", "torch")


def from_params(params_file: Path = paths.PARAMS_FILE) -> str | None:
    """`train.backend` as written in params.yaml; None when it cannot be read (config.load then
    names what is wrong)."""
    try:
        params = yaml.safe_load(params_file.read_text())
        return params["train"]["backend"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None


def set_from_params(params_file: Path = paths.PARAMS_FILE) -> str | None:
    """Set KERAS_BACKEND to the param's backend; return why not (one line), or None."""
    backend = from_params(params_file)
    if backend not in BACKENDS:
        return None  # a wrong value: config.load names it with the other params
    given = os.environ.get("KERAS_BACKEND")
    if given and given != backend:
        return (
            f"KERAS_BACKEND={given} but params.yaml has train.backend: {backend}, and DVC sees "
            f"only the param: run `dvc exp run -S train.backend={given}` (or unset KERAS_BACKEND)"
        )
    os.environ["KERAS_BACKEND"] = backend
    return None
