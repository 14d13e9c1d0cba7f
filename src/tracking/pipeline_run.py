"""The pipeline's MLflow run: one per pipeline execution. train opens it and writes its id to
paths.RUN_FILE (one of train's outputs); evaluate resumes it from there. A run whose process is
gone (SIGKILL, an out-of-memory kill) is ended KILLED by the next run, Ctrl-C ends it KILLED."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import psutil
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException

from common import files, paths
from ml import config
from tracking import lineage, store

# The pid and start time of the process that owns a pipeline run: with them the next run can
# tell a run whose process was killed (SIGKILL, a lost machine is not detectable) from a live one.
OWNER_TAG = "owner_process"


@contextmanager
def pipeline_run(params: config.Params, tags: dict[str, str]) -> Iterator[str]:
    """Open the pipeline's MLflow run (or the one `mlflow run` started); yield its id."""
    store.connect(store.tracking_uri())
    # Under `mlflow run`, MLFLOW_RUN_ID names the project's run; start_run() resumes it.
    in_project = "MLFLOW_RUN_ID" in os.environ
    exp = None if in_project else store.experiment_id(params.tracking.experiment)
    if exp is not None:
        end_orphaned_runs(exp)
    name = None if in_project else lineage.run_name(tags)  # `mlflow run` has named its run already
    with (
        mlflow.start_run(experiment_id=exp, run_name=name, log_system_metrics=True) as run,
        ended_as_killed_on_interrupt(),
    ):
        if in_project:
            note_foreign_experiment(run.info.experiment_id, params.tracking.experiment)
        mlflow.log_params(lineage.logged_params(params))
        mlflow.set_tags(tags | {OWNER_TAG: this_process()})
        yield run.info.run_id


def note_foreign_experiment(experiment_id: str, ours: str) -> None:
    """`mlflow run` without --experiment-name puts its run in "Default", apart from the
    pipeline's other runs; it cannot be moved, so say how to keep the next one with them."""
    name = mlflow.get_experiment(experiment_id).name
    if name != ours:
        print(
            f"note: this run is in MLflow experiment {name!r}, not {ours!r}: pass "
            f"--experiment-name {ours} to `mlflow run` to keep runs together",
            file=sys.stderr,
        )


@contextmanager
def ended_as_killed_on_interrupt() -> Iterator[None]:
    """Ctrl-C or SIGTERM (errors.exit_on_error raises it as KeyboardInterrupt) ends the active
    run KILLED; MLflow's own `with start_run()` would call it FAILED."""
    try:
        yield
    except KeyboardInterrupt:
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        raise


def this_process() -> str:
    me = psutil.Process()
    return f"{socket.gethostname()}:{me.pid}:{me.create_time():.3f}"


def is_alive(owner: str) -> bool:
    """Whether the process named by an OWNER_TAG value still runs (other hosts: assume so)."""
    host, pid, started = owner.rsplit(":", 2)
    if host != socket.gethostname():
        return True
    try:
        return f"{psutil.Process(int(pid)).create_time():.3f}" == started  # not a reused pid
    except (psutil.NoSuchProcess, ValueError):
        return False


def end_orphaned_runs(experiment: str) -> list[str]:
    """End as KILLED the pipeline runs left RUNNING by a process that no longer exists (SIGKILL,
    an out-of-memory kill, a power cut): without this they would show as running forever."""
    client = mlflow.MlflowClient()
    running = client.search_runs(
        [experiment], filter_string=f"attributes.status = 'RUNNING' and tags.{OWNER_TAG} != ''"
    )
    orphans = [run.info.run_id for run in running if not is_alive(run.data.tags[OWNER_TAG])]
    for run_id in orphans:
        client.set_tag(run_id, "ended_because", "its process was gone when the next run started")
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
    return orphans


def save_run_file(run_id: str, path: Path = paths.RUN_FILE) -> None:
    """The run for evaluate to resume, and its store as a teammate's clone can read it."""
    files.write_json(
        path, {"run_id": run_id, "tracking_uri": store.recorded(mlflow.get_tracking_uri())}
    )


@contextmanager
def resumed_run(path: Path = paths.RUN_FILE) -> Iterator[str]:
    """Reopen the run that train started, so evaluation lands in the same run. Under
    `mlflow run -e evaluate` the project's own run is used instead, tagged with train's run.
    The store is this process's (the file holds no credentials); it must be the one train used."""
    fix = "rerun the train stage (`dvc repro -f train`)"
    saved = files.read_json(path, fix)
    if not isinstance(saved, dict) or not {"run_id", "tracking_uri"} <= set(saved):
        raise store.TrackingError(f"{path}: no run_id and tracking_uri in it; {fix}")
    uri = store.tracking_uri()
    if store.recorded(uri) != saved["tracking_uri"]:
        raise store.TrackingError(
            f"{path} names a run in {saved['tracking_uri']}, but this process logs to "
            f"{store.recorded(uri)}: set MLFLOW_TRACKING_URI as train had it, or {fix}"
        )
    store.connect(uri)
    run_id = os.environ.get("MLFLOW_RUN_ID", saved["run_id"])
    try:
        mlflow.MlflowClient().get_run(run_id)
    except MlflowException as err:
        raise store.TrackingError(
            f"cannot resume MLflow run {run_id} in {saved['tracking_uri']}: {err.message}; {fix}"
        ) from err
    with (
        mlflow.start_run(run_id=run_id, log_system_metrics=True) as run,
        ended_as_killed_on_interrupt(),
    ):
        mlflow.set_tags({"trained_in_run": saved["run_id"], OWNER_TAG: this_process()})
        yield run.info.run_id
