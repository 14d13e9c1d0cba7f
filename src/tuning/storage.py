"""Where Optuna studies live: a SQLite file by default, any RDB URL (PostgreSQL) across machines,
with heartbeats so that a killed worker's trial is failed and retried once."""

from __future__ import annotations

from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy.exc import OperationalError

from common import paths
from common.errors import PipelineError
from ml import config
from tracking import store

STUDIES_DB = paths.ROOT / "optuna" / "studies.db"
# Held while a process opens the default storage: two processes creating its tables at once
# collide (sqlite3.IntegrityError on alembic_version; optuna/optuna#4621).
STUDIES_LOCK = STUDIES_DB.with_suffix(".lock")
CONNECT_TIMEOUT_S = 10


def storage(url: str | None, tune: config.TuneParams) -> RDBStorage:
    """SQLite by default (measured: a 60 s lock timeout held 64 workers, the default 5 s lost
    trials); any RDB URL (postgresql://...) for workers on many machines. Heartbeats turn a
    killed worker's RUNNING trial into FAIL and retry it once."""
    if url is None:
        url = f"sqlite:///{STUDIES_DB}"
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
            f"cannot open the study storage {store.masked(url)}: {cause}; start the "
            f"database, or fix --storage / tune.storage"
        ) from err
    except ImportError as err:  # SQLAlchemy found no driver for the URL's database
        raise PipelineError(
            f"no database driver for the study storage {store.masked(url)}: for PostgreSQL "
            f"run `uv sync --extra team`; else install the SQLAlchemy driver for that database"
        ) from err
