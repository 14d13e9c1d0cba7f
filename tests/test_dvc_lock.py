"""dvc.lock matches the dvc.yaml, code and params.yaml committed beside it.

A stale lock makes `dvc status` dirty in every fresh clone and its first `dvc repro` retrain;
the fix is always the same: run `dvc repro` (or `dvc commit` when the change cannot matter) and
commit dvc.lock with the change.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from common import paths

SRC = paths.ROOT / "src"

FIX = "run `dvc repro` and commit dvc.lock with the change"


def load(name: str) -> dict[str, Any]:
    return YAML(typ="safe").load((paths.ROOT / name).read_text())


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
        if dep["path"].startswith("src/") and md5(paths.ROOT / dep["path"]) != dep["md5"]
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


def test_every_stage_depends_on_each_project_module_it_imports():
    """A module a stage imports but dvc.yaml does not list: editing it would not rerun the stage,
    and its outputs would silently be stale."""
    for name, stage in load("dvc.yaml")["stages"].items():
        script = SRC / f"{name}.py"
        declared = {dep for dep in stage["deps"] if dep.startswith("src/")}
        missing = {f"src/{p.relative_to(SRC)}" for p in imported(script)} - declared
        assert not missing, f"{name}: add {sorted(missing)} to its deps in dvc.yaml"


def imported(script: Path, seen: set[Path] | None = None) -> set[Path]:
    """The project's modules `script` imports, directly or through others (not those imported
    only for type checking)."""
    seen = set() if seen is None else seen
    for node in runtime_nodes(ast.parse(script.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        for module in names:
            path = SRC / f"{module.replace('.', '/')}.py"
            if path.is_file() and path not in seen:
                seen.add(path)
                imported(path, seen)
    return seen


def runtime_nodes(tree: ast.AST):
    """Every node, except the bodies of `if TYPE_CHECKING:` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            continue
        yield node
        yield from runtime_nodes(node)


def md5(path: Path) -> str:
    """DVC 3's hash of a file: the MD5 of its bytes."""
    return hashlib.md5(path.read_bytes()).hexdigest()


def lookup(params: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        params = params[part]
    return params
