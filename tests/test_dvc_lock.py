"""dvc.lock matches the dvc.yaml, code and params.yaml committed beside it.

A stale lock makes `dvc status` dirty in every fresh clone and its first `dvc repro` retrain;
the fix is always the same: run `dvc repro` (or `dvc commit` when the change cannot matter) and
commit dvc.lock with the change.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

import config

FIX = "run `dvc repro` and commit dvc.lock with the change"


def load(name: str) -> dict[str, Any]:
    return YAML(typ="safe").load((config.ROOT / name).read_text())


@pytest.fixture(scope="module")
def locked() -> dict[str, Any]:
    return load("dvc.lock")["stages"]


def test_every_stage_is_locked_with_the_deps_dvc_yaml_declares(locked):
    declared = load("dvc.yaml")["stages"]
    assert set(locked) == set(declared), FIX
    for name, stage in declared.items():
        assert {dep["path"] for dep in locked[name]["deps"]} == set(stage["deps"]), f"{name}: {FIX}"


def test_every_locked_source_file_has_the_hash_in_the_lock(locked):
    """The code each stage runs (data and models are DVC's, and absent from a fresh clone)."""
    stale = [
        f"{name}: {dep['path']}"
        for name, stage in locked.items()
        for dep in stage["deps"]
        if dep["path"].startswith("src/") and md5(config.ROOT / dep["path"]) != dep["md5"]
    ]
    assert not stale, f"dvc.lock is stale for {', '.join(stale)}: {FIX}"


def test_every_locked_param_has_its_value_in_params_yaml(locked):
    params = load("params.yaml")
    stale = [
        f"{name}: {key}"
        for name, stage in locked.items()
        for key, value in stage.get("params", {}).get("params.yaml", {}).items()
        if lookup(params, key) != value
    ]
    assert not stale, f"dvc.lock holds other values for {', '.join(stale)}: {FIX}"


def md5(path: Path) -> str:
    """DVC 3's hash of a file: the MD5 of its bytes."""
    return hashlib.md5(path.read_bytes()).hexdigest()


def lookup(params: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        params = params[part]
    return params
