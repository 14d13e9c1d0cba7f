"""Tuning workers as the tests start and watch them: tune.py in a subprocess, its study and
its MLflow runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest
from filelock import FileLock

from common import paths
from tracking import store
from tuning import storage


def study_in(project: Path, name: str = "mnist-cnn") -> optuna.Study:
    """The project's study, opened under the lock its workers hold while creating the tables."""
    with FileLock(project / storage.STUDIES_LOCK.relative_to(paths.ROOT)):
        return optuna.load_study(study_name=name, storage=f"sqlite:///{project}/optuna/studies.db")


def mlflow_runs() -> list[mlflow.entities.Run]:
    mlflow.set_tracking_uri(store.tracking_uri())
    return mlflow.search_runs(experiment_names=["mnist-cnn"], output_format="list")


def start_tune(
    project: Path,
    *args: str,
    stdout: int = subprocess.DEVNULL,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "src/tune.py", *args],
        cwd=project,
        text=True,
        env={**os.environ, **(env or {})},
        stdout=stdout,
        stderr=subprocess.STDOUT if stdout == subprocess.PIPE else subprocess.PIPE,
    )


def wait_for_first_epoch(worker: subprocess.Popen) -> None:
    """Read the worker's output until its trial reports an epoch: heartbeats are recorded by
    then (Optuna never marks stale a trial killed before its first heartbeat)."""
    seen = []
    for line in worker.stdout:
        seen.append(line)
        if re.match(r"trial 0 \(1 of \d+\) epoch 1/", line):
            return
    pytest.fail("the worker ended before its first epoch:\n" + "".join(seen[-30:]))
