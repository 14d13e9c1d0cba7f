"""The pipeline's MLflow run: one per pipeline execution. train opens it and tags it with the
MD5 of the model it saved; evaluate finds it by the MD5 of the model it reads and resumes it.
A run whose process is gone (SIGKILL, an out-of-memory kill) is ended KILLED by the next run,
Ctrl-C ends it KILLED."""

from __future__ import annotations

import hashlib
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import psutil
from mlflow.entities import RunStatus

from common import paths, redact
from ml import config
from tracking import lineage, store

# The pid and start time of the process that owns a pipeline run: with them the next run can
# tell a run whose process was killed (SIGKILL, a lost machine is not detectable) from a live one.
OWNER_TAG = "owner_process"
# The model's MD5, the digest dvc.lock records for it: the hand-over from train to evaluate. A
# file naming the run would be a train output that differs on every run, so a retraining to the
# same bytes would still change dvc.lock; the model's own digest names the run that made it.
MODEL_TAG = "model_md5"


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


def model_md5(model_file: Path) -> str:
    with model_file.open("rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def mark_trained(model_file: Path) -> None:
    """Tag the active run as the one that wrote `model_file`'s bytes."""
    mlflow.set_tag(MODEL_TAG, model_md5(model_file))


def training_run(model_file: Path) -> str:
    """The newest run in this store, any experiment, that trained these exact bytes. DVC may
    restore a model from its cache without training it; the run that first wrote it is found
    all the same, and a model this store never saw trained is an error, not a new run."""
    digest = model_md5(model_file)
    client = mlflow.MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments,
        filter_string=f"tags.{MODEL_TAG} = '{digest}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise store.TrackingError(
            f"no MLflow run in {redact.uri(store.tracking_uri())} trained {model_file.name} "
            f"(md5 {digest}): set MLFLOW_TRACKING_URI to the store train used, or retrain it "
            "here with `dvc repro -f train`"
        )
    return runs[0].info.run_id


@contextmanager
def resumed_run(model_file: Path = paths.MODEL_FILE) -> Iterator[str]:
    """Reopen the run that trained `model_file`, so evaluation lands in the same run. Under
    `mlflow run -e evaluate` the project's own run is used instead, tagged with train's run."""
    store.connect(store.tracking_uri())
    trained_in = training_run(model_file)
    run_id = os.environ.get("MLFLOW_RUN_ID", trained_in)
    with (
        mlflow.start_run(run_id=run_id, log_system_metrics=True) as run,
        ended_as_killed_on_interrupt(),
    ):
        mlflow.set_tags({"trained_in_run": trained_in, OWNER_TAG: this_process()})
        yield run.info.run_id
