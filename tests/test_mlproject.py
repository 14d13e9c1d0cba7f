"""MLproject: `mlflow run . -e train -P ...` reaches the code and lands in the named experiment."""

from __future__ import annotations

import shutil
import subprocess
import sys

import mlflow

import tracking
from conftest import REPO, run_stage, venv_env


def test_mlflow_run_train_entry_point_passes_its_parameters(project, mirror):
    for name in ("MLproject", "python_env.yaml"):
        shutil.copy(REPO / name, project / name)
    (project / "data").mkdir()
    (project / "data" / "raw").symlink_to(mirror[0])
    assert run_stage(project, "preprocess").returncode == 0
    env = venv_env()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlflow",
            "run",
            ".",
            "-e",
            "train",
            "-P",
            "epochs=1",
            "-P",
            "batch_size=32",
            "--env-manager",
            "local",
            "--experiment-name",
            "mnist-cnn",
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    mlflow.set_tracking_uri(tracking.tracking_uri())
    (run,) = mlflow.search_runs(experiment_names=["mnist-cnn"], output_format="list")
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "1" and run.data.params["train.batch_size"] == "32"
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_accuracy")
    assert len(history) == 1
