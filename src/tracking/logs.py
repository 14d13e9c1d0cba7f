"""What a run logs besides its params and tags: per-epoch curves (a Keras callback, so the model
never imports the tracker), datasets, metrics, tables and report files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import keras
import mlflow
import pandas as pd

from ml import data


class EpochMetrics(keras.callbacks.Callback):
    """Log each epoch's metrics (and the learning rate train's EpochLog adds) at step=epoch, as
    epoch/<name>: the MLflow UI draws a section per prefix, so the curves come first, apart from
    the single values (test_*, train_seconds)."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        mlflow.log_metrics(
            {f"epoch/{key}": float(value) for key, value in (logs or {}).items()}, step=epoch + 1
        )


def log_training_summary(seconds: float, weights: int) -> None:
    """What the curves do not show: the training's wall time (a metric, to compare runs by) and
    the model's size (a tag). The last epoch's values are the curves' last points."""
    mlflow.log_metric("train_seconds", seconds)
    mlflow.set_tag("model_params", str(weights))


def log_dataset(split: data.Split, name: str, source: Path, context: str, digest: str) -> None:
    dataset = mlflow.data.from_numpy(
        split.x, targets=split.y, source=str(source), name=name, digest=digest[:16]
    )
    mlflow.log_input(dataset, context=context)


def log_files(paths: list[Path], folder: str) -> None:
    """Log report files; PNGs show as images in the UI's artifact view."""
    for path in paths:
        mlflow.log_artifact(str(path), artifact_path=folder)


def log_metrics(metrics: Mapping[str, float]) -> None:
    mlflow.log_metrics({key: float(value) for key, value in metrics.items()})


def log_table(table: pd.DataFrame, artifact_file: str) -> None:
    mlflow.log_table(table, artifact_file=artifact_file)
