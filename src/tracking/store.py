"""Where MLflow runs go and how to reach the store: the tracking URI, connecting with a check of
the server and the account, experiments, the UI link, and store failures as one line.

Every printed or logged URI goes through `redact.uri`: a password never leaves the process.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import mlflow
import requests
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError

from common import files, paths, redact
from common.errors import PipelineError, translator

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
# MLflow's system metrics (CPU, memory, disk, network; GPU with pynvml) on every pipeline and
# trial run: sampled every 2 s rather than MLflow's 10, so a one-minute trial draws a curve. The
# same variables set otherwise win. On a shared server each machine's metrics carry its name
# (system/<host>/...), so workers of one study are told apart.
SYSTEM_METRICS_DEFAULTS = {
    "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "2",
    "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING": "1",
}
# What to do about the store failures a user can fix, by a phrase of MLflow's message.
STORE_FIXES = {
    "database is locked": "another process holds a write lock on it; retry when it is done",
    "readonly database": "make the database file and its folder writable for this user",
    "unable to open database": "check that the database's folder exists and is writable",
    "database or disk is full": "the file system holding it is full; free some space there",
    "API request": "the server failed the request; check the server's log",
}
UNKNOWN_FIX = "check MLFLOW_TRACKING_URI, or unset it to log to mlflow.db in the repo"
# SQLAlchemy's notes that open its message, ahead of the database's own words.
NOT_THE_CAUSE = ("(raised as a result of Query-invoked autoflush", "(Background on this error")
# MLflow's UI (3.17) opens every experiment on its GenAI pages unless the user picks "Model
# training" (remembered by the browser) or the URL asks for it; the experiment's own
# mlflow.experimentKind tag does not change that. Links the stages print ask for it.
UI_RUNS_QUERY = "workflowType=machine_learning"
# How long connect() waits for a server to accept the connection: one that is down refuses it
# at once, and a host that drops packets should not hold a stage for long.
PROBE_CONNECT_S = 5.0
# mlflow ui's address when it serves the embedded store.
LOCAL_UI = "http://127.0.0.1:5000"


class TrackingError(PipelineError):
    """The tracking store cannot be reached or used; the message says which URI and how to fix."""


@translator
def store_failure(err: Exception) -> TrackingError | None:
    """An MLflow or database error, as one line with the store and what to do."""
    if not isinstance(err, MlflowException | SQLAlchemyError):
        return None
    message = str(err.message if isinstance(err, MlflowException) else err)
    lines = [line for line in message.strip().splitlines() if not line.startswith(NOT_THE_CAUSE)]
    known = [(line, fix) for line in lines for phrase, fix in STORE_FIXES.items() if phrase in line]
    first, fix = (known or [(lines[0] if lines else type(err).__name__, UNKNOWN_FIX)])[0]
    where = redact.uri(mlflow.get_tracking_uri())
    return TrackingError(f"MLflow store {where}: {first[:300]}; {fix}")


def store_root() -> Path:
    """The repo root even inside `dvc exp run --temp` workspaces (DVC points DVC_ROOT at it)."""
    return Path(os.environ.get("DVC_ROOT", paths.ROOT)).resolve()


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI (a team server), else sqlite:///<repo>/mlflow.db, which `mlflow ui`
    reads when started in the repo root. Absolute, so every working directory logs to one store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or embedded_uri()


def embedded_uri() -> str:
    return f"sqlite:///{store_root() / 'mlflow.db'}"


def connect(uri: str) -> None:
    """Use `uri`; fail in seconds, not after MLflow's minutes of retries, if a server is down."""
    for name, value in (HTTP_DEFAULTS | SYSTEM_METRICS_DEFAULTS).items():
        os.environ.setdefault(name, value)
    if uri.startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_SYSTEM_METRICS_NODE_ID", socket.gethostname())
        probe(uri, "health")
        check_credentials(uri)
    elif uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        check_writable(database)
        files.library_writes_to(database.parent / "mlruns")  # artifact_root's folder
    mlflow.set_tracking_uri(uri)


def check_writable(database: Path) -> None:
    """Every stage writes to the store: a read-only database (or folder, which SQLite needs for
    its journal) fails now, before any training, and not as SQLAlchemy's error at the end."""
    for path in (database, database.parent):
        if path.exists() and not os.access(path, os.W_OK):
            raise TrackingError(
                f"MLflow store {database} is read-only ({path} cannot be written): make it and "
                f"its folder writable for this user, or set MLFLOW_TRACKING_URI to another store"
            )


def probe(uri: str, path: str, **request: object) -> requests.Response:
    """GET `path` on the server. A server that is down refuses the connection at once; one that
    is up but busy (a CI machine training beside it) may take seconds to answer, so the read waits
    as long as MLflow's own requests would (MLFLOW_HTTP_REQUEST_TIMEOUT)."""
    timeouts = (PROBE_CONNECT_S, float(os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"]))
    try:
        answer = requests.get(f"{uri.rstrip('/')}/{path}", timeout=timeouts, **request)
        if answer.status_code not in (401, 403):
            answer.raise_for_status()
    except requests.HTTPError as err:  # it answers, but fails: broken, not busy
        raise TrackingError(
            f"MLflow tracking server {redact.uri(uri)} answers HTTP {err.response.status_code} "
            f"to /{path}: it is up but failing; see the server's log (its database or artifact "
            f"store), or unset MLFLOW_TRACKING_URI to log to sqlite:///mlflow.db in the repo"
        ) from err
    except requests.RequestException as err:
        raise TrackingError(
            f"MLflow tracking server {redact.uri(uri)} does not answer ({type(err).__name__}). "
            f"Start it, fix MLFLOW_TRACKING_URI, or unset it to log to sqlite:///mlflow.db in "
            f"the repo."
        ) from err
    return answer


def check_credentials(uri: str) -> None:
    """A server with authentication turns a missing or wrong account away on the first call: say
    so now, once, rather than as MLflow's error halfway through a stage."""
    account = (
        os.environ.get("MLFLOW_TRACKING_USERNAME"),
        os.environ.get("MLFLOW_TRACKING_PASSWORD"),
    )
    answer = probe(
        uri,
        "api/2.0/mlflow/experiments/search",
        params={"max_results": 1},
        auth=account if all(account) else None,
    )
    if answer.status_code in (401, 403):
        given = "were refused" if all(account) else "are not set"
        raise TrackingError(
            f"MLflow tracking server {redact.uri(uri)} requires an account (HTTP "
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


def run_page(run_id: str) -> str | None:
    """The run's own page on the team server's UI; None for the embedded store (no UI runs)."""
    uri = mlflow.get_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return None
    experiment = mlflow.get_run(run_id).info.experiment_id
    return f"{redact.uri(uri.rstrip('/'))}/#/experiments/{experiment}/runs/{run_id}"


def runs_page(run_id: str) -> str:
    """Where to compare the run with the others: the team server's page listing its experiment,
    or, for the embedded store, that page as `mlflow ui` started in the repo root serves it."""
    uri = mlflow.get_tracking_uri()
    served = uri.startswith(("http://", "https://"))
    experiment = mlflow.get_run(run_id).info.experiment_id
    page = f"{redact.uri(uri.rstrip('/') if served else LOCAL_UI)}/#/experiments/{experiment}/runs"
    link = f"{page}?{UI_RUNS_QUERY}"
    return link if served else f"`mlflow ui` in the repo root, then {link}"
