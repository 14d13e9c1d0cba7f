"""The shape docs/architecture.md describes: entry scripts on top, small modules in packages, no
import cycles, no module importing an entry script, MLflow behind tracking (and tuning's runs)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO

SRC = REPO / "src"
MAX_LINES = 300
ENTRY_SCRIPTS = {path.stem for path in SRC.glob("*.py")}
MODULES = {".".join(p.relative_to(SRC).with_suffix("").parts): p for p in SRC.glob("*/*.py")}
MLFLOW_ALLOWED = ("tracking.", "tuning.runs")


def imports(path: Path) -> Iterator[str]:
    """Every module name `path` imports, at any depth (function-level imports included)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def project_imports(path: Path) -> set[str]:
    return {name for name in imports(path) if name in MODULES or name in ENTRY_SCRIPTS}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_is_small(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module}: {lines} lines; split it by concern"


def test_no_module_imports_an_entry_script():
    offenders = {m for m, path in MODULES.items() if project_imports(path) & ENTRY_SCRIPTS}
    offenders |= {s for s in ENTRY_SCRIPTS if project_imports(SRC / f"{s}.py") & ENTRY_SCRIPTS}
    assert not offenders, f"import a package module instead: {sorted(offenders)}"


def test_the_modules_import_each_other_without_cycles():
    graph = {m: project_imports(path) - ENTRY_SCRIPTS for m, path in MODULES.items()}
    done: set[str] = set()

    def visit(module: str, trail: tuple[str, ...]) -> None:
        if module in trail:
            pytest.fail(" -> ".join([*trail[trail.index(module) :], module]))
        if module not in done:
            for imported in graph[module]:
                visit(imported, (*trail, module))
            done.add(module)

    for module in graph:
        visit(module, ())


def test_only_tracking_and_tuning_runs_import_mlflow():
    users = {
        m for m, path in MODULES.items() if any(n.split(".")[0] == "mlflow" for n in imports(path))
    }
    users |= {
        s for s in ENTRY_SCRIPTS if any(n.startswith("mlflow") for n in imports(SRC / f"{s}.py"))
    }
    assert users and all(m.startswith(MLFLOW_ALLOWED) for m in users), sorted(users)


def test_the_logged_model_code_imports_nothing_of_the_project():
    """MLflow copies tracking/served_model.py into every logged model, alone."""
    assert not project_imports(MODULES["tracking.served_model"])
