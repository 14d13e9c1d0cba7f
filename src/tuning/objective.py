"""One trial: draw its values from the space, train with training.fit (the project's one training
loop) in a child MLflow run, report each epoch to the pruner, measure the model (ml.footprint),
and return its objectives: the validation accuracy alone, or with latency, weights or size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from ml import config, data, footprint, runtime, training, tune_params
from tracking import lineage, logs
from tuning import coordination, front, runs, summary
from tuning.progress import SearchProgress, clock_time


class EpochReport(keras.callbacks.Callback):
    """Print and report each epoch's validation accuracy at step = epochs trained, then ask to
    prune.

    The step is the resource spent: a trial stopped at the 4-epoch rung has cost 4 epochs
    whatever its schedule's length. (Steps in percent of the schedule made stopping a 24-epoch
    trial at "10%" cost 3 epochs, and long schedules won such rungs, so every complete trial was
    a long one: 2.1x at best, bench/README.md.)"""

    def __init__(self, trial: optuna.Trial, progress: SearchProgress, prune: bool = True) -> None:
        super().__init__()
        self.trial, self.progress, self.prune = trial, progress, prune

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        accuracy = float(logs["val_accuracy"])
        print(
            f"trial {self.trial.number} ({self.progress.current()}) epoch {epoch + 1}/"
            f"{self.params['epochs']}: val_accuracy {accuracy:.4f}, "
            f"{clock_time(self.progress.elapsed())} elapsed",
            flush=True,
        )
        if not self.prune:  # Optuna prunes single-objective studies only
            return
        self.trial.report(accuracy, step=epoch + 1)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}")


def suggest(trial: optuna.Trial, space: dict[str, tune_params.Dimension]) -> dict[str, Any]:
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


def starting_point(
    params: config.Params, space: dict[str, tune_params.Dimension]
) -> dict[str, Any]:
    """params.yaml's own values, each moved to the nearest end of its range when outside it
    (the default's 6 epochs against a space from 12) and left to the sampler when not among its
    choices: a new study's first trial, so the search starts from the default, not a random
    draw; with tens of trials in a CPU-hour, TPE's ten random start-up trials are most of it."""
    current = lineage.flatten(params.model_dump(mode="json"))
    start: dict[str, Any] = {}
    for path, dim in space.items():
        value = current.get(path)
        if dim.choices is not None:
            if value in dim.choices:
                start[path] = value
        elif isinstance(value, int | float):
            start[path] = min(max(value, dim.low), dim.high)
    return start


def searched(space: dict[str, tune_params.Dimension], fixed: dict[str, Any]) -> dict[str, Any]:
    """The dimensions that -S did not fix (train.epochs=2 fixes train.epochs; train.model=...
    fixes every train.model.* dimension)."""
    return {
        path: dim
        for path, dim in space.items()
        if not any(path == key or path.startswith(f"{key}.") for key in fixed)
    }


class Objective:
    """Train one candidate with training.fit; return its objectives, in tune.objectives' order
    (one value for a single objective, as Optuna expects)."""

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
        self.tune = params.tune
        self.fixed = fixed or {}
        self.space = searched(params.tune.space, self.fixed)
        self.progress = progress or SearchProgress(n_trials=1, timeout_s=None)
        self.device = runtime.configure(params.train.precision)

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
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
            report = EpochReport(trial, self.progress, prune=not self.tune.several)
            try:
                fitted = self.fit(params, [report])
            except optuna.TrialPruned:
                outcome["state"] = "PRUNED"
                raise
            scores = self.measured(trial, fitted)
            outcome["state"] = "COMPLETE"
        values = tuple(scores[name] for name in self.tune.objectives)
        return values if self.tune.several else values[0]

    def measured(self, trial: optuna.Trial, fitted: training.Fitted) -> dict[str, float]:
        """Every measure (tune_params.MEASURES), whatever the study optimises, so that any
        study can be picked from by speed or size (front.Pick); and the bounds' verdicts."""
        costs = footprint.measure(fitted.model, self.splits.val.x[0]).as_dict()
        runs.log_trial_costs(costs, fitted.seconds)
        scores = {"val_accuracy": fitted.final()["val_accuracy"], **costs}
        trial.set_user_attr(front.MEASURES_ATTR, scores)
        trial.set_user_attr(front.SECONDS_ATTR, fitted.seconds)
        for name, bound in self.tune.constraints.items():
            trial.set_constraint(name, bound.excess(scores[name]))
        return scores

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
