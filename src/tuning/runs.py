"""Tuning's MLflow runs: one parent run per Optuna study, shared by its workers, and one nested
child run per trial, each ended with the trial's state."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import RunStatus, RunTag

from common import redact
from tracking import store

# A pruned trial did what was asked of it: FINISHED, its trial_state tag says PRUNED (KILLED
# would show it in red, like a run someone stopped).
STATE_TO_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}


def study_run(experiment: str, study: str, storage: str) -> str:
    """The study's parent run, shared by every worker of the study; created by the first.
    The caller has connected: tune.run does so before it opens the study, to fail early."""
    project_run = os.environ.pop("MLFLOW_RUN_ID", None)  # under `mlflow run`: its run is the parent
    if project_run:
        mlflow.MlflowClient().set_tag(project_run, "optuna_study", study)
        return project_run
    exp = store.experiment_id(experiment)
    found = mlflow.search_runs(
        [exp], filter_string=f"tags.optuna_study = '{study}'", output_format="list", max_results=1
    )
    if found:
        return found[0].info.run_id
    run = mlflow.MlflowClient().create_run(
        exp,
        run_name=f"study-{study}",
        tags={"optuna_study": study, "optuna_storage": redact.uri(storage)},
    )
    return run.info.run_id


@contextmanager
def searching(parent_id: str, others_running: Callable[[], bool]) -> Iterator[None]:
    """The study's parent run is RUNNING while a worker searches. It ends FINISHED when the
    last worker's search ends (a later worker reopens it), KILLED if the search is interrupted."""
    client = mlflow.MlflowClient()
    client.update_run(parent_id, status="RUNNING")
    try:
        yield
    except KeyboardInterrupt:
        client.set_terminated(parent_id, RunStatus.to_string(RunStatus.KILLED))
        raise
    if not others_running():
        client.set_terminated(parent_id, RunStatus.to_string(RunStatus.FINISHED))


def log_trial_outcome(
    parent_id: str, number: int, scores: dict[str, float] | None, best: float | None
) -> None:
    """On the study's run, by trial number: each complete trial's objectives and the best
    accuracy so far (the curve a user watches flatten)."""
    client = mlflow.MlflowClient()
    for name, metric in {**(scores or {}), "best_val_accuracy": best}.items():
        if metric is not None:
            client.log_metric(parent_id, name, float(metric), step=number)


@contextmanager
def trial_run(parent_id: str, number: int, params: dict[str, Any]) -> Iterator[dict[str, str]]:
    """A child run for one trial. The caller sets outcome["state"] to COMPLETE or PRUNED;
    anything else (an exception, Ctrl-C) leaves FAIL. The state and duration are logged."""
    outcome = {"state": "FAIL"}
    parent = mlflow.get_run(parent_id)
    start = time.monotonic()
    mlflow.start_run(
        experiment_id=parent.info.experiment_id,
        run_name=f"trial-{number}",
        parent_run_id=parent_id,
        tags={"optuna_trial": str(number), "worker": socket.gethostname()},
        log_system_metrics=True,
    )
    try:
        mlflow.log_params(params)
        yield outcome
    finally:
        mlflow.set_tag("trial_state", outcome["state"])
        mlflow.log_metric("duration_s", time.monotonic() - start)
        mlflow.end_run(status=STATE_TO_STATUS[outcome["state"]])


def log_trial_costs(costs: dict[str, float], train_seconds: float) -> None:
    """On the trial's run: what its model costs to serve (ml.footprint), and its training time,
    a cost that compares trials (duration_s adds the measuring and the logging)."""
    mlflow.log_metrics({**costs, "train_seconds": train_seconds})


def fail_dead_trial_runs(parent_id: str, failed_trials: Iterable[int]) -> list[str]:
    """End as FAILED the child runs still RUNNING of trials Optuna has failed: a worker killed
    mid-trial never reaches trial_run's `finally`, and Optuna fails its trial later, from another
    worker. Returns the ids of the runs ended."""
    numbers = {str(number) for number in failed_trials}
    if not numbers:
        return []
    client = mlflow.MlflowClient()
    experiment = client.get_run(parent_id).info.experiment_id
    running = client.search_runs(
        [experiment],
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}' and attributes.status = 'RUNNING'",
    )
    dead = [run.info.run_id for run in running if run.data.tags.get("optuna_trial") in numbers]
    for run_id in dead:
        client.set_tag(run_id, "trial_state", "FAIL")
        client.set_terminated(run_id, STATE_TO_STATUS["FAIL"])
    return dead


@contextmanager
def retrain_run(parent_id: str, trial: int, params: dict[str, Any]) -> Iterator[None]:
    """A child run of the study for retraining a trial with `params` (and registering it)."""
    parent = mlflow.get_run(parent_id)
    with mlflow.start_run(
        experiment_id=parent.info.experiment_id,
        run_name=f"trial-{trial}-retrained",
        parent_run_id=parent_id,
        tags={"retrained_trial": str(trial)},
        log_system_metrics=True,
    ):
        mlflow.log_params(params)
        yield


def log_study_summary(
    parent_id: str,
    figures: dict[str, Any],
    trials: pd.DataFrame,
    best: dict[str, Any],
    pareto: pd.DataFrame,
) -> None:
    """Optuna's plots as images, the trials table, the front's table (every complete trial's
    measures, the front first) and the best trial, on the parent run.

    Every worker of the study writes this when it finishes, so each write replaces the last:
    the table is written as text, not with log_table, which appends to a table already there (a
    row per trial per worker) and rewrites a run tag; and the tags go in one log_batch, which
    MLflow retries when another worker inserts the same tag at once (set_tag fails instead).
    """
    client = mlflow.MlflowClient()
    for name, figure in figures.items():
        client.log_figure(parent_id, figure, f"plots/{name}.png")
    table = trials.to_json(orient="split", index=False, date_format="iso")  # log_table's format
    client.log_text(parent_id, table, "trials.json")
    client.log_text(parent_id, trials.to_csv(index=False), "trials.csv")
    client.log_text(parent_id, pareto.to_csv(index=False), "pareto_front.csv")
    client.log_dict(parent_id, best, "best.json")
    tags = {"best_value": str(best["value"]), "best_trial": str(best["trial"])}
    client.log_batch(parent_id, tags=[RunTag(key, value) for key, value in tags.items()])


def tag_front(parent_id: str, on_front: Iterable[int]) -> None:
    """pareto=true on the runs of the front's trials, false on the other complete trials' (a
    trial leaves the front when a later one beats it), so the runs table can filter on it."""
    numbers = {str(number) for number in on_front}
    client = mlflow.MlflowClient()
    experiment = client.get_run(parent_id).info.experiment_id
    children = client.search_runs(
        [experiment],
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}' and tags.trial_state = 'COMPLETE'",
        max_results=50_000,
    )
    for run in children:
        number = run.data.tags.get("optuna_trial")
        if number is not None:
            client.set_tag(run.info.run_id, "pareto", str(number in numbers).lower())
