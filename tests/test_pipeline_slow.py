"""The real pipeline on real MNIST: `dvc exp run -S train.epochs=2` in a fresh git repo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SHARED_MNIST

pytestmark = pytest.mark.slow

PROJECT_FILES = (
    "src",
    "params.yaml",
    "dvc.yaml",
    "dvc.lock",
    ".dvc/config",
    ".dvcignore",
    ".gitignore",
)


def dvc(root: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.setdefault("MNIST_MIRROR", str(SHARED_MNIST))
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's files in a new git repo with one commit, as after `git clone`."""
    root = tmp_path_factory.mktemp("checkout")
    for name in PROJECT_FILES:
        source, target = REPO / name, root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "fresh clone"], cwd=root, check=True)
    return root


def test_dvc_exp_run_trains_a_working_cnn_on_real_mnist(checkout):
    dvc(checkout, "exp", "run", "-S", "train.epochs=2")
    scores = json.loads((checkout / "reports" / "eval" / "metrics.json").read_text())
    assert scores["accuracy"] >= 0.985  # a broken CNN or a label mix-up lands far below
    history = (checkout / "reports" / "train" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 2  # header + one row per epoch


def test_a_second_repro_reruns_nothing(checkout):
    assert "Running stage" not in dvc(checkout, "repro")
    assert "Data and pipelines are up to date" in dvc(checkout, "status")
