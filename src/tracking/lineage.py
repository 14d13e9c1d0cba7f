"""Lineage: the tags that answer "what exactly produced this run?" (commit, data, params, backend),
the params flattened as params.yaml names them, and the run's name."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras

from common import paths, redact
from ml import config


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'train': {'model': {'dense': [128]}}} -> {'train.model.dense.0': 128}, as in params.yaml."""
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, list | tuple):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


# What the pipeline itself rewrites while it runs: DVC deletes a stage's outputs before running
# it (reports/ are git-tracked) and rewrites dvc.lock after each stage. Changes there say nothing
# about the code and params a run used, and would mark every `dvc repro` dirty.
PIPELINE_PRODUCTS = ("reports", "dvc.lock")


def git_state(root: Path = paths.ROOT) -> dict[str, str]:
    """HEAD, and whether the checkout's code, params or data specs differ from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()

    products = [f":(exclude){path}" for path in PIPELINE_PRODUCTS]
    try:
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", *products)
        return {"git_commit": git("rev-parse", "HEAD"), "git_dirty": str(bool(changed)).lower()}
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": "unknown (not a git checkout)", "git_dirty": "unknown"}


def logged_params(params: config.Params) -> dict[str, Any]:
    """params.yaml's values by dotted key, as MLflow params; a secret in one (a storage URL a
    flag gave with its password) is hidden."""
    flat = flatten(params.model_dump(mode="json"))
    return {key: redact.text(v) if isinstance(v, str) else v for key, v in flat.items()}


def lineage(params: config.Params, data_digest: str, device: str) -> dict[str, str]:
    """The tags that answer 'what exactly produced this run?'."""
    canonical = json.dumps(params.model_dump(mode="json"), sort_keys=True).encode()
    experiment = (
        {"dvc_experiment": os.environ["DVC_EXP_NAME"]} if "DVC_EXP_NAME" in os.environ else {}
    )
    return (
        git_state()
        | experiment
        | {
            "data_digest": data_digest,
            "arch": params.train.arch,
            "device": device,
            "keras_backend": keras.backend.backend(),
            "params_hash": hashlib.sha256(canonical).hexdigest()[:16],
        }
    )


def run_name(tags: Mapping[str, str]) -> str:
    """Under `dvc exp run`, the experiment's name (as `dvc exp show` lists it); under `dvc repro`,
    the commit it trained: repro-1a2b3c4, with -dirty when the checkout had local changes."""
    if os.environ.get("DVC_EXP_NAME"):
        return os.environ["DVC_EXP_NAME"]
    if tags.get("git_dirty") not in {"true", "false"}:  # not a git checkout
        return "repro"
    return f"repro-{tags['git_commit'][:7]}" + ("-dirty" if tags["git_dirty"] == "true" else "")
