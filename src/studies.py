"""Where Optuna studies live, and how a study survives the death of its workers.

Optuna's heartbeats fail a killed worker's trial only once the trial has a heartbeat row. A trial
is RUNNING from `study.ask()` on, and its first heartbeat is written by a thread that may wait on
the SQLite lock: a worker killed in between would leave the trial RUNNING forever. So each trial
writes its first heartbeat itself and signs with its worker's name; an unsigned RUNNING trial
older than the grace period is an orphan, failed and retried like a stale one.
"""

from __future__ import annotations

import copy
import datetime
import os
import socket

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from sqlalchemy.exc import OperationalError

import config
import tracking
from errors import PipelineError

STUDIES_DB = config.ROOT / "optuna" / "studies.db"
# Held while a process opens the default storage: two processes creating its tables at once
# collide (sqlite3.IntegrityError on alembic_version; optuna/optuna#4621).
STUDIES_LOCK = STUDIES_DB.with_suffix(".lock")
WORKER_ATTR = "worker"
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
            f"cannot open the study storage {tracking.masked(url)}: {cause}; start the "
            f"database, or fix --storage / tune.storage"
        ) from err
    except ImportError as err:  # SQLAlchemy found no driver for the URL's database
        raise PipelineError(
            f"no database driver for the study storage {tracking.masked(url)}: for PostgreSQL "
            f"run `uv sync --extra team`; else install the SQLAlchemy driver for that database"
        ) from err


def trial_id(rdb: RDBStorage, study: optuna.Study, number: int) -> int:
    study_id = rdb.get_study_id_from_name(study.study_name)
    return rdb.get_trial_id_from_study_id_trial_number(study_id, number)


def sign_in(rdb: RDBStorage, trial: optuna.Trial) -> None:
    """First thing in a trial: a heartbeat row (so Optuna can see it die), then the signature."""
    rdb.record_heartbeat(trial_id(rdb, trial.study, trial.number))
    trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")


def fail_orphans(
    rdb: RDBStorage, study: optuna.Study, now: datetime.datetime | None = None
) -> list[int]:
    """Fail RUNNING trials that never signed in within the grace period, then retry each once
    (the storage's stale-trial callback); return their numbers. Safe when workers race."""
    now = now or datetime.datetime.now()
    grace = datetime.timedelta(seconds=rdb.grace_period or 0)
    orphans = [
        trial
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if WORKER_ATTR not in trial.user_attrs and now - trial.datetime_start > grace
    ]
    retry = rdb.get_heartbeat_stale_trial_callback()
    failed = []
    for trial in orphans:
        tid = trial_id(rdb, study, trial.number)
        try:
            if not rdb.set_trial_state_values(tid, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker got there first
            continue
        failed.append(trial.number)
        if retry is not None:
            retry(study, copy.deepcopy(rdb.get_trial(tid)))
    return failed
