"""Where Optuna studies live: a SQLite file by default, any RDB URL (PostgreSQL) across machines,
with heartbeats so that a killed worker's trial is failed and retried once."""

from __future__ import annotations

import os
import re

from optuna.exceptions import StorageInternalError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy.exc import OperationalError

from common import paths, redact
from common.errors import PipelineError, translator
from ml import tune_params

STUDIES_DB = paths.ROOT / "optuna" / "studies.db"
# Held while a process opens the default storage: two processes creating its tables at once
# collide (sqlite3.IntegrityError on alembic_version; optuna/optuna#4621).
STUDIES_LOCK = STUDIES_DB.with_suffix(".lock")
CONNECT_TIMEOUT_S = 10
# tune.storage: ${OPTUNA_STORAGE} names the variable that holds the URL (and its password).
REFERENCE = re.compile(r"\$\{(\w+)\}")


def variable(given: str) -> str | None:
    """The variable that `given` names (${NAME}), if it names one."""
    found = REFERENCE.fullmatch(given.strip())
    return found[1] if found else None


def resolved(given: str | None) -> str | None:
    """The storage URL: `given` itself, or the value of the variable it names."""
    if not given or (name := variable(given)) is None:
        return given or None
    if not os.environ.get(name):
        raise PipelineError(
            f"tune.storage names ${name}, which is not set: export {name}=postgresql://user:"
            f"password@host/db (team_stack.py's env file does), or empty tune.storage for the "
            f"local SQLite file"
        )
    return os.environ[name]


def storage(given: str | None, tune: tune_params.TuneParams) -> RDBStorage:
    """SQLite by default (measured: a 60 s lock timeout held 64 workers, the default 5 s lost
    trials); any RDB URL (postgresql://...) for workers on many machines, given as is or as the
    ${NAME} of the variable holding it. Heartbeats turn a killed worker's RUNNING trial into
    FAIL and retry it once."""
    url = resolved(given) or f"sqlite:///{STUDIES_DB}"
    if url.startswith("sqlite"):
        engine: dict = {"connect_args": {"timeout": 60}}
    else:
        # A server drops connections idle through an hour-long trial; test each before use
        # rather than fail the trial on a dead one (optuna/optuna#5600).
        engine = {"pool_pre_ping": True}
        if url.startswith("postgresql"):  # libpq waits forever on a host that never answers
            engine["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        return RDBStorage(
            url,
            engine_kwargs=engine,
            heartbeat_interval=tune.heartbeat_s,
            grace_period=tune.grace_s,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )
    except OperationalError as err:  # opening the storage connects: a server down fails here
        cause = str(err.orig).strip().splitlines()[0][:200]
        raise PipelineError(
            f"cannot open the study storage {redact.uri(url)}: {cause}; start the "
            f"database, or fix --storage / tune.storage"
        ) from err
    except ImportError as err:  # SQLAlchemy found no driver for the URL's database
        raise PipelineError(
            f"no database driver for the study storage {redact.uri(url)}: for PostgreSQL "
            f"run `uv sync --extra team`; else install the SQLAlchemy driver for that database"
        ) from err


@translator
def storage_failure(err: Exception) -> PipelineError | None:
    """Optuna's wrapper of a database error in mid-search, as one line in the database's words.
    Each trial is written when it finishes, so the finished ones are kept."""
    if not isinstance(err, StorageInternalError):
        return None
    cause = getattr(err.__cause__, "orig", None) or err.__cause__ or err
    words = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
    fix = (
        "free some space on the file system holding it (optuna/ by default) and rerun"
        if "disk is full" in words
        else "check the database, or --storage / tune.storage, and rerun"
    )
    return PipelineError(f"the study storage failed: {words}; {fix}: finished trials are kept")
