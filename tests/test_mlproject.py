"""MLproject: `mlflow run . -e train` passes on only what the user gives (params.yaml holds every
default), and a run started outside the project's experiment says how to keep runs together."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from conftest import REPO, run_in_venv, run_stage
from tracking import store


@pytest.fixture
def prepared(project: Path, mirror) -> Path:
    for name in ("MLproject", "python_env.yaml"):
        shutil.copy(REPO / name, project / name)
    (project / "data").mkdir(exist_ok=True)
    (project / "data" / "raw").symlink_to(mirror[0])
    assert run_stage(project, "preprocess").returncode == 0
    return project


def mlflow_run(project: Path, *options: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mlflow", "run", ".", "-e", "train", "--env-manager", "local"]
    result = run_in_venv([*command, *options], project, 600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def the_run(experiment: str) -> mlflow.entities.Run:
    mlflow.set_tracking_uri(store.tracking_uri())
    (run,) = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    assert run.info.status == "FINISHED"
    return run


def test_the_train_entry_point_passes_the_parameters_given(prepared):
    result = mlflow_run(
        prepared, "-P", "epochs=1", "-P", "batch_size=16", "--experiment-name", "mnist-cnn"
    )
    run = the_run("mnist-cnn")
    assert run.data.params["train.epochs"] == "1" and run.data.params["train.batch_size"] == "16"
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "epoch/val_accuracy")
    assert len(history) == 1
    assert "note:" not in result.stderr


def test_parameters_left_out_keep_params_yaml_and_a_stray_experiment_is_named(prepared):
    result = mlflow_run(prepared)  # no -P, no --experiment-name
    params = yaml.safe_load((prepared / "params.yaml").read_text())["train"]
    run = the_run("Default")
    for key in ("epochs", "batch_size", "learning_rate"):
        assert float(run.data.params[f"train.{key}"]) == params[key], key
    assert run.data.params["train.preset"] == "None"
    assert "pass --experiment-name mnist-cnn to `mlflow run`" in result.stderr
