"""One trial: draw its values from the space, train with training.fit (the project's one training
loop) in a child MLflow run, report each epoch to the pruner, return the validation accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from ml import config, data, runtime, training
from tracking import logs
from tuning import coordination, runs, summary
from tuning.progress import SearchProgress, clock_time


class EpochReport(keras.callbacks.Callback):
    """Print and report each epoch's validation accuracy at step = epochs trained, then ask to
    prune.

    The step is the resource spent: a trial stopped at the 4-epoch rung has cost 4 epochs
    whatever its schedule's length. (Steps in percent of the schedule made stopping a 24-epoch
    trial at "10%" cost 3 epochs, and long schedules won such rungs, so every complete trial was
    a long one: 2.1x at best, bench/README.md.)"""

    def __init__(self, trial: optuna.Trial, progress: SearchProgress) -> None:
        super().__init__()
        self.trial, self.progress = trial, progress

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        accuracy = float(logs["val_accuracy"])
        print(
            f"trial {self.trial.number} ({self.progress.current()}) epoch {epoch + 1}/"
            f"{self.params['epochs']}: val_accuracy {accuracy:.4f}, "
            f"{clock_time(self.progress.elapsed())} elapsed",
            flush=True,
        )
        self.trial.report(accuracy, step=epoch + 1)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}")


def suggest(trial: optuna.Trial, space: dict[str, config.Dimension]) -> dict[str, Any]:
    """One value per dimension, named by its params.yaml path."""
    chosen: dict[str, Any] = {}
    for path, dim in space.items():
        if dim.choices is not None:
            chosen[path] = trial.suggest_categorical(path, dim.choices)
        elif isinstance(dim.low, int) and isinstance(dim.high, int):
            chosen[path] = trial.suggest_int(path, dim.low, dim.high, log=dim.log)
        else:
            chosen[path] = trial.suggest_float(path, dim.low, dim.high, log=dim.log)
    return chosen


def searched(space: dict[str, config.Dimension], fixed: dict[str, Any]) -> dict[str, Any]:
    """The dimensions that -S did not fix (train.epochs=2 fixes train.epochs; train.model=...
    fixes every train.model.* dimension)."""
    return {
        path: dim
        for path, dim in space.items()
        if not any(path == key or path.startswith(f"{key}.") for key in fixed)
    }


class Objective:
    """Train one candidate with training.fit and return its final validation accuracy."""

    def __init__(
        self,
        splits: data.Splits,
        scaling: data.Scaling,
        parent_id: str,
        params: config.Params,
        fixed: dict[str, Any] | None = None,  # the -S train.*/seed values `params` holds
        rdb: RDBStorage | None = None,  # None: an in-memory study, one process, no orphans
        progress: SearchProgress | None = None,
    ) -> None:
        self.splits, self.scaling, self.parent_id, self.rdb = splits, scaling, parent_id, rdb
        self.params = params  # validated once, with the -S values: each trial starts from these
        self.fixed = fixed or {}
        self.space = searched(params.tune.space, self.fixed)
        self.progress = progress or SearchProgress(n_trials=1, timeout_s=None)
        self.device = runtime.configure(params.train.precision)

    def __call__(self, trial: optuna.Trial) -> float:
        if self.rdb is not None:
            coordination.sign_in(self.rdb, trial)
            coordination.fail_orphans(self.rdb, trial.study)
            failed = trial.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            runs.fail_dead_trial_runs(self.parent_id, [t.number for t in failed])
        chosen = suggest(trial, self.space)
        params = config.with_values(self.params, chosen)
        trial.set_user_attr(summary.TRAINED_ATTR, summary.trained_with(params))
        keras.backend.clear_session()  # free the previous trial's graphs (memory grows otherwise)
        with runs.trial_run(self.parent_id, trial.number, self.fixed | chosen) as outcome:
            try:
                fitted = self.fit(params, [EpochReport(trial, self.progress)])
            except optuna.TrialPruned:
                outcome["state"] = "PRUNED"
                raise
            outcome["state"] = "COMPLETE"
        return fitted.final()["val_accuracy"]

    def fit(
        self, params: config.Params, callbacks: Sequence[keras.callbacks.Callback] = ()
    ) -> training.Fitted:
        return training.fit(
            self.splits,
            params.train,
            params.seed,
            self.scaling,
            self.device,
            verbose=0,
            callbacks=[*callbacks, logs.EpochMetrics()],
        )
