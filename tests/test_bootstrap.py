"""bootstrap: every entry script starts it before its heavy imports; Ctrl-C at any moment is one
line and exit 130; library modules change nothing in the process when imported."""

from __future__ import annotations

import ast
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy
from PIL import Image

from common import bootstrap
from conftest import REPO, run_in_venv, venv_env
from ml import config, model

SRC = REPO / "src"
LAUNCHER = Path(__file__).with_name("interrupt_launcher.py")
ENTRY_SCRIPTS = sorted(path.stem for path in SRC.glob("*.py"))
# Per entry script, a library it imports at its top, before any work.
LOADING = {
    "evaluate": "keras",
    "fetch": "requests",
    "predict": "mlflow",
    "preprocess": "sklearn",
    "serve": "uvicorn",
    "team_stack": "psutil",
    "train": "keras",
    "tune": "pydantic",
}


def interrupted(cwd: Path, moment: str, script: str, *args: str) -> subprocess.CompletedProcess:
    return run_in_venv([sys.executable, str(LAUNCHER), moment, f"src/{script}.py", *args], cwd, 300)


def assert_one_line(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == bootstrap.INTERRUPTED, result.stderr
    assert result.stderr.startswith("error: interrupted by SIGINT: "), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr


def test_every_entry_script_is_covered_here():
    assert set(LOADING) == set(ENTRY_SCRIPTS)


@pytest.mark.parametrize("script", ENTRY_SCRIPTS)
def test_every_entry_script_starts_the_bootstrap_first_and_runs_main_through_it(script):
    tree = ast.parse((SRC / f"{script}.py").read_text())
    calls = [ast.unparse(node) for node in tree.body if isinstance(node, ast.Expr)]
    imports = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    first_heavy = next(n.lineno for n in imports if getattr(n, "module", "") != "__future__"
                       and "bootstrap" not in ast.unparse(n))  # fmt: skip
    start = next(n for n in tree.body if "bootstrap.start(__name__" in ast.unparse(n))
    assert start.lineno < first_heavy, f"{script}: bootstrap.start must come before the imports"
    assert any(call.startswith("bootstrap.start(__name__") for call in calls)
    assert ast.unparse(tree.body[-1]) == "if __name__ == '__main__':\n    bootstrap.run(main)"


@pytest.mark.parametrize("script", ENTRY_SCRIPTS)
def test_ctrl_c_while_an_entry_script_loads_its_libraries_is_one_line(script):
    assert_one_line(interrupted(REPO, f"import:{LOADING[script]}", script, "--help"))


def test_ctrl_c_mid_work_is_one_line_and_leaves_no_file(project, mirror, monkeypatch):
    monkeypatch.setenv("MNIST_MIRROR", str(mirror[0]))
    assert_one_line(interrupted(project, "open:-ubyte.gz", "fetch"))  # as the first file is read
    assert not list(project.glob("data/raw/*"))


def test_ctrl_c_while_answers_are_printed_is_one_line(tmp_path):
    tiny = model.build_cnn(config.ModelSpec(blocks=[config.ConvBlock(filters=2)]))
    tiny.save(tmp_path / "tiny.keras")
    Image.new("L", (28, 28), 255).save(tmp_path / "blank.png")  # an error line, also printed
    args = ["--model", str(tmp_path / "tiny.keras"), str(tmp_path / "blank.png")]
    assert_one_line(interrupted(REPO, "print", "predict", *args))


# --- the process a library module leaves when imported ---

SNAPSHOT = """
import ast, importlib, logging, os, pathlib, sys, warnings
src = pathlib.Path(sys.argv[1]); sys.path.insert(0, str(src))
packages = {p.name for p in src.iterdir() if (p / "__init__.py").exists()}
modules = sorted(".".join(p.relative_to(src).with_suffix("").parts) for p in src.glob("*/*.py"))
for name in modules:  # the libraries first: what they set when loaded is theirs
    for node in ast.parse((src / (name.replace(".", "/") + ".py")).read_text()).body:
        found = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
        for lib in found:
            if lib.split(".")[0] not in packages | {"__future__"}:
                importlib.import_module(lib)

def state():
    loggers = logging.Logger.manager.loggerDict.items()
    levels = {n: l.level for n, l in loggers if isinstance(l, logging.Logger) and l.level}
    return dict(os.environ), levels | {"": logging.root.level}, list(warnings.filters)

for name in modules:
    before = state()
    importlib.import_module(name)
    after = state()
    for what, old, new in zip(("environment", "logger levels", "warning filters"), before, after):
        if old != new:
            print(f"{name} changes the {what}")
"""


def test_importing_a_library_module_changes_no_environment_logger_or_warning_filter():
    result = subprocess.run(
        [sys.executable, "-c", SNAPSHOT, str(SRC)],
        env=venv_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert result.stdout == "", result.stdout


# --- a signal inside database code waits until the process is outside it ---


@pytest.fixture
def in_a_statement():
    """Runs `probe` from inside SQLAlchemy executing a statement on a real SQLite database."""

    def run(probe) -> list:
        engine = sqlalchemy.create_engine("sqlite://")
        seen = []
        sqlalchemy.event.listen(
            engine, "before_cursor_execute", lambda *_: seen.append(probe(sys._getframe()))
        )
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("select 1"))
        return seen

    return run


def test_database_code_is_recognised_from_any_frame_below_it(in_a_statement):
    assert in_a_statement(bootstrap.in_transaction) == [True]
    assert not bootstrap.in_transaction(sys._getframe())


def test_a_signal_inside_a_transaction_is_sent_again_not_raised(in_a_statement, monkeypatch):
    again = []
    monkeypatch.setattr(bootstrap, "redeliver_later", again.append)
    monkeypatch.setattr(bootstrap, "_working", True)
    assert in_a_statement(lambda frame: bootstrap._on_signal(signal.SIGTERM, frame)) == [None]
    assert again == [signal.SIGTERM]
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        bootstrap._on_signal(signal.SIGTERM, sys._getframe())  # outside: at once


STAGE = """
import os, signal, sys
sys.path.insert(0, sys.argv[2])
from common import bootstrap

bootstrap.start(__name__)

import sqlalchemy

def main():
    engine = sqlalchemy.create_engine(f"sqlite:///{sys.argv[1]}")
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("create table runs (status text)"))
    signal_once = lambda *_: os.kill(os.getpid(), signal.SIGTERM)
    sqlalchemy.event.listen(engine, "before_cursor_execute", signal_once, once=True)
    with engine.begin() as connection:  # SIGTERM lands as this write starts
        connection.execute(sqlalchemy.text("insert into runs values ('ended')"))
    while True:  # the signal, sent again, ends this
        pass

bootstrap.run(main)
"""


def test_a_stage_signalled_mid_write_finishes_the_write_then_stops(tmp_path):
    database = tmp_path / "store.db"
    stage = subprocess.run(
        [sys.executable, "-c", STAGE, str(database), str(SRC)],
        env=venv_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stage.returncode == bootstrap.INTERRUPTED, stage.stderr
    assert stage.stderr.startswith("error: interrupted by SIGTERM"), stage.stderr
    with sqlite3.connect(database) as db:
        assert db.execute("select status from runs").fetchall() == [("ended",)]
