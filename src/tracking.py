"""MLflow runs: where they go, lineage, per-epoch metrics, tables and figures, tuning's runs.
Models and the registry are registry.py's; nothing else imports mlflow.

One pipeline execution is one MLflow run: train opens it and writes its id to config.RUN_FILE
(one of train's outputs); evaluate resumes it from there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import keras
import mlflow
import pandas as pd
import psutil
import requests
from mlflow.entities import RunStatus, RunTag
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError

import config
import data
import files
from errors import PipelineError, translator

# MLflow's chatter with nothing to act on, kept out of the stages' output: INFO lines while a
# model is logged ("Detected uv project", "Validating input example"), a progress bar for one
# small download, a warning that this uv-made environment has no pip (the model's requirements
# are pinned explicitly), and a warning that a local .npz fits two kinds of dataset source (both
# are LocalArtifactDatasetSource). MLflow's other warnings and errors still show.
logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# Against a server MLflow prints "View run ... at: <url>" at each run's end; evaluate prints the
# one link worth following.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")

# MLflow's HTTP client retries a failing server 7 times with backoff factor 2 (about 4.5
# minutes) and waits 120 s on a silent one. A server that is down when a stage starts is caught
# in seconds by connect(); once a run is under way, 6 retries (about 2 minutes of backoff) ride
# out a server restart, and a longer outage fails the stage sooner. Set these variables to
# choose otherwise.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "6",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
# What to do about the store failures a user can fix, by a phrase of MLflow's message.
STORE_FIXES = {
    "database is locked": "another process holds a write lock on it; retry when it is done",
    "readonly database": "make the database file and its folder writable for this user",
    "unable to open database": "check that the database's folder exists and is writable",
    "API request": "the server failed the request; check the server's log",
}
# MLflow's UI (3.17) opens every experiment on its GenAI pages unless the user picks "Model
# training" (remembered by the browser) or the URL asks for it; the experiment's own
# mlflow.experimentKind tag does not change that. Links the stages print ask for it.
UI_RUNS_QUERY = "workflowType=machine_learning"
# mlflow ui's address when it serves the embedded store.
LOCAL_UI = "http://127.0.0.1:5000"
# The pid and start time of the process that owns a pipeline run: with them the next run can
# tell a run whose process was killed (SIGKILL, a lost machine is not detectable) from a live one.
OWNER_TAG = "owner_process"


class TrackingError(PipelineError):
    """The tracking store cannot be reached or used; the message says which URI and how to fix."""


def masked(uri: str) -> str:
    """The URI without its password: postgresql://user:***@host/db."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@translator
def store_failure(err: Exception) -> TrackingError | None:
    """An MLflow or database error, as one line with the store and what to do."""
    if not isinstance(err, MlflowException | SQLAlchemyError):
        return None
    message = str(err.message if isinstance(err, MlflowException) else err)
    first = message.strip().splitlines()[0] if message.strip() else type(err).__name__
    fix = next(
        (fix for phrase, fix in STORE_FIXES.items() if phrase in message),
        "check MLFLOW_TRACKING_URI, or unset it to log to mlflow.db in the repo",
    )
    return TrackingError(f"MLflow store {masked(mlflow.get_tracking_uri())}: {first[:300]}; {fix}")


def store_root() -> Path:
    """The repo root even inside `dvc exp run --temp` workspaces (DVC points DVC_ROOT at it)."""
    return Path(os.environ.get("DVC_ROOT", config.ROOT)).resolve()


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI (a team server), else sqlite:///<repo>/mlflow.db, which `mlflow ui`
    reads when started in the repo root. Absolute, so every working directory logs to one store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_root() / 'mlflow.db'}"


def connect(uri: str) -> None:
    """Use `uri`; fail in seconds, not after MLflow's minutes of retries, if a server is down."""
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if uri.startswith(("http://", "https://")):
        try:
            requests.get(f"{uri.rstrip('/')}/health", timeout=5).raise_for_status()
        except requests.RequestException as err:
            raise TrackingError(
                f"MLflow tracking server {masked(uri)} does not answer ({type(err).__name__}). "
                f"Start it, fix MLFLOW_TRACKING_URI, or unset it to log to sqlite:///mlflow.db in "
                f"the repo."
            ) from err
        check_credentials(uri)
    mlflow.set_tracking_uri(uri)


def check_credentials(uri: str) -> None:
    """A server with authentication turns a missing or wrong account away on the first call: say
    so now, once, rather than as MLflow's error halfway through a stage."""
    account = (
        os.environ.get("MLFLOW_TRACKING_USERNAME"),
        os.environ.get("MLFLOW_TRACKING_PASSWORD"),
    )
    answer = requests.get(
        f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search",
        params={"max_results": 1},
        auth=account if all(account) else None,
        timeout=5,
    )
    if answer.status_code in (401, 403):
        given = "were refused" if all(account) else "are not set"
        raise TrackingError(
            f"MLflow tracking server {masked(uri)} requires an account (HTTP "
            f"{answer.status_code}): the credentials {given}; set MLFLOW_TRACKING_USERNAME and "
            f"MLFLOW_TRACKING_PASSWORD to an account on it"
        )


def artifact_root(uri: str) -> str | None:
    """Artifacts of a sqlite store go to mlruns/ beside the .db file, whatever the cwd."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlruns").as_uri()
    return None  # a server decides for itself


def experiment_id(name: str) -> str:
    """The experiment's id, creating it (with an absolute artifact location) if it is new."""
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = artifact_root(mlflow.get_tracking_uri())
    return mlflow.create_experiment(name, artifact_location=location)


def runs_page(run_id: str) -> str:
    """Where to compare the run with the others: the team server's page listing its experiment,
    or, for the embedded store, that page as `mlflow ui` started in the repo root serves it."""
    uri = mlflow.get_tracking_uri()
    served = uri.startswith(("http://", "https://"))
    experiment = mlflow.get_run(run_id).info.experiment_id
    page = f"{masked(uri.rstrip('/') if served else LOCAL_UI)}/#/experiments/{experiment}/runs"
    link = f"{page}?{UI_RUNS_QUERY}"
    return link if served else f"`mlflow ui` in the repo root, then {link}"


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'train': {'model': {'dense': [128]}}} -> {'train.model.dense.0': 128}, as in params.yaml."""
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, list | tuple):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


# What the pipeline itself rewrites while it runs: DVC deletes a stage's outputs before running
# it (reports/ are git-tracked) and rewrites dvc.lock after each stage. Changes there say nothing
# about the code and params a run used, and would mark every `dvc repro` dirty.
PIPELINE_PRODUCTS = ("reports", "dvc.lock")


def git_state(root: Path = config.ROOT) -> dict[str, str]:
    """HEAD, and whether the checkout's code, params or data specs differ from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()

    products = [f":(exclude){path}" for path in PIPELINE_PRODUCTS]
    try:
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", *products)
        return {"git_commit": git("rev-parse", "HEAD"), "git_dirty": str(bool(changed)).lower()}
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": "unknown (not a git checkout)", "git_dirty": "unknown"}


def lineage(params: config.Params, data_digest: str, arch: str, device: str) -> dict[str, str]:
    """The tags that answer 'what exactly produced this run?'."""
    canonical = json.dumps(params.model_dump(mode="json"), sort_keys=True).encode()
    experiment = (
        {"dvc_experiment": os.environ["DVC_EXP_NAME"]} if "DVC_EXP_NAME" in os.environ else {}
    )
    return (
        git_state()
        | experiment
        | {
            "data_digest": data_digest,
            "arch": arch,
            "device": device,
            "keras_backend": keras.backend.backend(),
            "params_hash": hashlib.sha256(canonical).hexdigest()[:16],
        }
    )


@contextmanager
def pipeline_run(params: config.Params, tags: dict[str, str]) -> Iterator[str]:
    """Open the pipeline's MLflow run (or the one `mlflow run` started); yield its id."""
    connect(tracking_uri())
    # Under `mlflow run`, MLFLOW_RUN_ID names the project's run; start_run() resumes it.
    in_project = "MLFLOW_RUN_ID" in os.environ
    exp = None if in_project else experiment_id(params.tracking.experiment)
    if exp is not None:
        end_orphaned_runs(exp)
    name = None if in_project else run_name(tags)  # `mlflow run` has named its run already
    with (
        mlflow.start_run(experiment_id=exp, run_name=name) as run,
        ended_as_killed_on_interrupt(),
    ):
        if in_project:
            note_foreign_experiment(run.info.experiment_id, params.tracking.experiment)
        mlflow.log_params(flatten(params.model_dump(mode="json")))
        mlflow.set_tags(tags | {OWNER_TAG: this_process()})
        yield run.info.run_id


def run_name(tags: Mapping[str, str]) -> str:
    """Under `dvc exp run`, the experiment's name (as `dvc exp show` lists it); under `dvc repro`,
    the commit it trained: repro-1a2b3c4, with -dirty when the checkout had local changes."""
    if os.environ.get("DVC_EXP_NAME"):
        return os.environ["DVC_EXP_NAME"]
    if tags.get("git_dirty") not in {"true", "false"}:  # not a git checkout
        return "repro"
    return f"repro-{tags['git_commit'][:7]}" + ("-dirty" if tags["git_dirty"] == "true" else "")


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


def save_run_file(run_id: str, path: Path = config.RUN_FILE) -> None:
    files.write_json(path, {"run_id": run_id, "tracking_uri": mlflow.get_tracking_uri()})


@contextmanager
def resumed_run(path: Path = config.RUN_FILE) -> Iterator[str]:
    """Reopen the run that train started, so evaluation lands in the same run. Under
    `mlflow run -e evaluate` the project's own run is used instead, tagged with train's run."""
    fix = "rerun the train stage (`dvc repro -f train`)"
    saved = files.read_json(path, fix)
    if not isinstance(saved, dict) or not {"run_id", "tracking_uri"} <= set(saved):
        raise TrackingError(f"{path}: no run_id and tracking_uri in it; {fix}")
    connect(saved["tracking_uri"])
    run_id = os.environ.get("MLFLOW_RUN_ID", saved["run_id"])
    try:
        mlflow.MlflowClient().get_run(run_id)
    except MlflowException as err:
        raise TrackingError(
            f"cannot resume MLflow run {run_id} in {masked(saved['tracking_uri'])}: "
            f"{err.message}; {fix}"
        ) from err
    with mlflow.start_run(run_id=run_id) as run, ended_as_killed_on_interrupt():
        mlflow.set_tags({"trained_in_run": saved["run_id"], OWNER_TAG: this_process()})
        yield run.info.run_id


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


# --- tuning: one parent run per Optuna study, one nested child run per trial ---

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
    exp = experiment_id(experiment)
    found = mlflow.search_runs(
        [exp], filter_string=f"tags.optuna_study = '{study}'", output_format="list", max_results=1
    )
    if found:
        return found[0].info.run_id
    run = mlflow.MlflowClient().create_run(
        exp,
        run_name=f"study-{study}",
        tags={"optuna_study": study, "optuna_storage": masked(storage)},
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


def log_trial_outcome(parent_id: str, number: int, value: float | None, best: float | None) -> None:
    """On the study's run, by trial number: each complete trial's score and the best so far
    (the curve a user watches flatten)."""
    client = mlflow.MlflowClient()
    for name, metric in {"val_accuracy": value, "best_val_accuracy": best}.items():
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
        tags={"optuna_trial": str(number)},
    )
    try:
        mlflow.log_params(params)
        yield outcome
    finally:
        mlflow.set_tag("trial_state", outcome["state"])
        mlflow.log_metric("duration_s", time.monotonic() - start)
        mlflow.end_run(status=STATE_TO_STATUS[outcome["state"]])


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
def retrain_run(parent_id: str, best: dict[str, Any]) -> Iterator[None]:
    """A child run of the study for retraining its best trial (and registering the model)."""
    parent = mlflow.get_run(parent_id)
    with mlflow.start_run(
        experiment_id=parent.info.experiment_id,
        run_name=f"trial-{best['trial']}-retrained",
        parent_run_id=parent_id,
        tags={"retrained_trial": str(best["trial"])},
    ):
        mlflow.log_params(best["params"])
        yield


def log_study_summary(
    parent_id: str, figures: dict[str, Any], trials: pd.DataFrame, best: dict[str, Any]
) -> None:
    """Optuna's plots as images, the trials table, and the best trial, on the parent run.

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
    client.log_dict(parent_id, best, "best.json")
    tags = {"best_value": str(best["value"]), "best_trial": str(best["trial"])}
    client.log_batch(parent_id, tags=[RunTag(key, value) for key, value in tags.items()])
