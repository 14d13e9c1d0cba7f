"""Workers that share one study, on one machine or many: who creates the study and its MLflow
parent run, how each draws its own trials, the -S values they must agree on, and how a killed
worker's trial is failed and retried.

Optuna's heartbeats fail a killed worker's trial only once the trial has a heartbeat row. A trial
is RUNNING from `study.ask()` on, and its first heartbeat is written by a thread that may wait on
the SQLite lock: a worker killed in between would leave the trial RUNNING forever. So each trial
writes its first heartbeat itself and signs with its worker's name; an unsigned RUNNING trial
older than the grace period is an orphan, failed and retried like a stale one (the storage's
RetryHeartbeatStaleTrialCallback does the retry).
"""

from __future__ import annotations

import copy
import datetime
import os
import socket
import time
import zlib
from collections.abc import Callable
from typing import Any

import optuna
from filelock import FileLock
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from common import redact
from common.errors import PipelineError
from ml import config, tune_params
from tuning import pruning, runs, storage

# The study remembers the train.* and seed values its command fixed with -S: its trials are only
# comparable under them, and --apply/--register need them to rebuild the winner.
FIXED_ATTR = "fixed"


# Where the study records its MLflow parent run, and how long a joining worker waits for the
# creating worker to record it (the creator does so within a second of creating the study).
PARENT_ATTR = "mlflow_parent_run"


PARENT_WAITS, PARENT_PAUSE_S = 60, 0.5

# The study remembers its tune.objectives and tune.constraints: workers joining it must share them.
GOAL_ATTR = "goal"


def open_study(
    name: str, rdb: RDBStorage, tune: tune_params.TuneParams, existing: bool
) -> tuple[optuna.Study, bool]:
    """Join (or start) the study, and say whether this worker created it; with `existing`, a
    missing one is an error, not a new study. A study of several objectives has no pruner:
    Optuna prunes single-objective studies only."""
    pruner = optuna.pruners.NopPruner() if tune.several else pruning.pruner(tune.pruner)
    if existing:
        if name not in optuna.get_all_study_names(rdb):
            known = ", ".join(optuna.get_all_study_names(rdb)) or "none yet"
            raise PipelineError(
                f"no study named {name!r} in {redact.uri(rdb.url)} (studies there: {known});"
                f" run `python src/tune.py --study {name}` to search first"
            )
        return optuna.load_study(study_name=name, storage=rdb, pruner=pruner), False
    try:  # the storage lets one worker create a name: it alone learns that it did
        study = optuna.create_study(
            study_name=name, storage=rdb, directions=tune.directions, pruner=pruner
        )
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=name, storage=rdb, pruner=pruner), False


def parent_run(
    study: optuna.Study,
    experiment: str,
    storage_url: str,
    created: bool,
    pause: Callable[[float], None] = time.sleep,
) -> str:
    """The study's one MLflow parent run. The worker that created the study creates it and
    records its id in the study; a worker joining a new study waits for that id instead of
    racing it to a second parent (workers on other machines share no file lock)."""
    waits = 0 if created or study.trials else PARENT_WAITS
    for waited in range(waits + 1):
        recorded = study.user_attrs.get(PARENT_ATTR)
        if recorded is not None:
            return recorded
        if waited < waits:
            pause(PARENT_PAUSE_S)
    # The creator, an older study (found by its tag), or a creator that died before recording.
    run_id = runs.study_run(experiment, study.study_name, storage_url)
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id


def keep_goal(study: optuna.Study, tune: tune_params.TuneParams) -> None:
    """Record what the study optimises and within what bounds, or refuse a worker that would
    optimise something else: its trials would not compare with the study's."""
    goal = {"objectives": tune.objectives, "constraints": constraints_of(tune)}
    recorded = study.user_attrs.get(GOAL_ATTR)
    if recorded is None and not study.trials:
        study.set_user_attr(GOAL_ATTR, goal)
        return
    # A study older than GOAL_ATTR optimised validation accuracy alone, unbounded.
    recorded = recorded or {"objectives": ["val_accuracy"], "constraints": {}}
    for key in ("objectives", "constraints"):
        if recorded[key] != goal[key]:
            raise PipelineError(
                f"study {study.study_name} has tune.{key} {recorded[key]}, this command "
                f"{goal[key]}: give the study's (-S 'tune.{key}=...'), or name another --study"
            )


def constraints_of(tune: tune_params.TuneParams) -> dict[str, dict[str, float]]:
    return {name: bound.model_dump(exclude_none=True) for name, bound in tune.constraints.items()}


def keep_fixed(study: optuna.Study, fixed: dict[str, Any]) -> None:
    """Record the study's -S values, or refuse a worker whose values differ from them."""
    recorded = study.user_attrs.get(FIXED_ATTR)
    if recorded is None and not study.trials:
        study.set_user_attr(FIXED_ATTR, fixed)
    elif (recorded or {}) != fixed:
        given = " ".join(f"-S {key}={value}" for key, value in (recorded or {}).items())
        raise PipelineError(
            f"study {study.study_name} searches with {given or 'no train.*/seed -S values'}, "
            f"this command with {fixed or 'none'}: give the same -S values, or name another "
            f"--study"
        )


def joined(params: config.Params, existing: bool) -> tuple[optuna.Study, RDBStorage, str, bool]:
    """The study, its storage, its MLflow parent run and whether this worker created the study.
    Workers on this machine take turns (creating the tables at once collides); parent_run keeps
    workers anywhere to one parent."""
    storage.STUDIES_DB.parent.mkdir(exist_ok=True)
    with FileLock(storage.STUDIES_LOCK):
        rdb = storage.storage(params.tune.storage, params.tune)
        study, created = open_study(params.tune.study, rdb, params.tune, existing)
        parent_id = parent_run(study, params.tracking.experiment, rdb.url, created)
    return study, rdb, parent_id, created


def sampler_seed(seed: int, study: optuna.Study, created: bool) -> int:
    """tune.seed for the worker that creates the study, so a one-worker search draws the same
    trials every time. A worker joining or resuming it must not replay those draws: its seed is
    offset by the trials already run and by the worker itself (workers started together see the
    same trials, none)."""
    if created:
        return seed
    worker = zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode())
    return (seed + len(study.trials) + worker) % 2**32


def still_running(study: optuna.Study) -> bool:
    """Whether another worker still runs a trial of the study (its parent run stays open)."""
    return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


WORKER_ATTR = "worker"


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
