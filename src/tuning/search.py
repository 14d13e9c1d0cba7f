"""The Optuna search behind tune.py: this worker's share of a study, then its winner and what to
do with it (--apply writes it into params.yaml, --register retrains and registers it).

Every trial trains on the training split and is scored by validation accuracy; the test split is
never read. The default storage is a SQLite file with a 60 s lock timeout and heartbeats
(tuning.storage), so workers started in several terminals share one study, and a killed worker's
trial is failed and retried once (tuning.coordination).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import keras
import optuna
from optuna.storages import RDBStorage

from common import files, paths, redact
from ml import config, footprint, params_file, training, tune_params
from tracking import lineage, models, store
from tuning import coordination, front, objective, runs, storage, summary
from tuning.pick import Pick
from tuning.progress import SearchProgress, TrialReport, clock_time

STORAGE_VARIABLE = "OPTUNA_STORAGE"  # what the README and team_stack.py export the URL as


def quiet_optuna() -> None:
    """Each finished trial is reported once, by TrialReport: Optuna's own INFO line would repeat
    it, and its WARNING for a failed trial is a traceback of an error the bootstrap reports in one
    line (or, for a bug, with the traceback anyway). Optuna calls the heartbeats, their retries
    and its matplotlib plots experimental; the tuner relies on them. Optuna sets its log level
    when it loads, so this is a call, made as a search starts."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def register_best(
    trainer: objective.Objective, study: str, best: dict[str, Any], name: str
) -> None:
    """Retrain the picked trial with what it trained with (same seed: on CPU, the same weights)
    and register the model as `challenger`, tagged with what it costs to serve (measured again,
    here); tuning never reads the test set, so `champion` is evaluate's call."""
    print(f"retraining trial {best['trial']} of study {study} to register it ...", flush=True)
    params = summary.rebuilt(trainer.params, best)
    keras.backend.clear_session()
    logged = lineage.flatten(summary.trained_with(params))
    with runs.retrain_run(trainer.parent_id, best["trial"], logged):
        fitted = trainer.fit(params)
        val = fitted.final()["val_accuracy"]
        costs = footprint.measure(fitted.model, trainer.splits.val.x[0]).as_dict()
        runs.log_trial_costs(costs, fitted.seconds)
        tags = {"study": study, "trial": best["trial"], "trial_val_accuracy": best["value"]}
        version = models.register_challenger(
            fitted.model,
            trainer.splits.val.x[:5],
            name,
            tags | {"pick": best["pick"], "val_accuracy": val, **costs},
        )
    print(
        f"registered {name} version {version} as challenger: val_accuracy {val:.4f} "
        f"(the trial's: {best['value']:.4f}), {costs_line(costs)}"
    )


def costs_line(costs: dict[str, float]) -> str:
    return (
        f"latency {costs['latency_ms']:.3g} ms, {costs['params']:,} weights, "
        f"{costs['size_kb']:,.0f} KB"
    )


def search(params: config.Params, fixed: dict[str, Any]) -> None:
    """Run this worker's share of the study, then log and print its winner and what to do next."""
    quiet_optuna()
    store.connect(store.tracking_uri())  # a dead server fails here, before a study exists
    splits, scaling = training.load_inputs()
    tune = params.tune
    study, rdb, parent_id, created = coordination.joined(params, existing=False)
    coordination.keep_goal(study, tune)
    coordination.keep_fixed(study, fixed)
    study.sampler = optuna.samplers.TPESampler(
        seed=coordination.sampler_seed(tune.seed, study, created)
    )
    progress = SearchProgress(tune.n_trials, tune.timeout_s)
    trainer = objective.Objective(splits, scaling, parent_id, params, fixed, rdb, progress)
    callbacks: list[Any] = [TrialReport(parent_id, progress, tune.objectives)]
    if tune.max_trials:
        callbacks.append(optuna.study.MaxTrialsCallback(tune.max_trials))
    announce(study, rdb, tune, list(trainer.space), fixed)
    if created:  # only the study's creator: a joining or resuming worker finds it queued or run
        study.enqueue_trial(objective.starting_point(params, trainer.space))
        print("the first trial is params.yaml's own values (moved into the space where outside)")
    # Ctrl-C: Optuna fails the running trial, the parent run ends KILLED, and exit_on_error
    # says that rerunning the command resumes the study.
    with runs.searching(parent_id, lambda: coordination.still_running(study)):
        study.optimize(
            trainer,
            n_trials=tune.n_trials,
            timeout=tune.timeout_s,
            callbacks=callbacks,
            gc_after_trial=True,
        )
    best = summary.best_of(study)
    pareto = front.pareto_front(study)
    figures = summary.figures(study, tune.objectives)
    runs.log_study_summary(parent_id, figures, study.trials_dataframe(), best, front.table(study))
    runs.tag_front(parent_id, [trial.number for trial in pareto])
    with files.atomic_path(paths.BEST_PARAMS_FILE) as tmp, tmp.open("w") as handle:
        params_file.dump(best, handle)
    if tune.several:
        print_front(pareto, tune, len(study.trials))
    else:
        print_best(best, tune)


def print_best(best: dict[str, Any], tune: tune_params.TuneParams) -> None:
    print(f"best: trial {best['trial']}, val_accuracy {best['value']:.4f}")
    for key, value in best["params"].items():
        print(f"  {key}: {value:.6g}" if isinstance(value, float) else f"  {key}: {value}")
    print(f"written to {paths.BEST_PARAMS_FILE.relative_to(paths.ROOT)}; next:")
    study_flags = flags(tune)
    print(f"  python src/tune.py {study_flags} --apply && dvc repro   # train it in the pipeline")
    print(f"  python src/tune.py {study_flags} --register   # or register it as challenger now")


# The fronts printed whole: longer ones are in the parent run's pareto_front.csv.
FRONT_LINES = 8


def print_front(
    pareto: list[optuna.trial.FrozenTrial], tune: tune_params.TuneParams, n_trials: int
) -> None:
    directions = ", ".join(
        f"{name} {'up' if direction == 'maximize' else 'down'}"
        for name, direction in zip(tune.objectives, tune.directions, strict=True)
    )
    print(f"Pareto front ({directions}): {len(pareto)} of {n_trials} trials, most accurate first")
    for trial in pareto[:FRONT_LINES]:
        print(f"  {front.described(trial, tune.objectives)}")
    if len(pareto) > FRONT_LINES:
        print(f"  ... {len(pareto) - FRONT_LINES} more in the study run's pareto_front.csv")
    study_flags = flags(tune)
    print("pick one and train it in the pipeline, or register it as challenger now:")
    print(f"  python src/tune.py {study_flags} --apply --pick accuracy && dvc repro  # the best")
    print(
        f"  python src/tune.py {study_flags} --apply --pick fastest:0.1 && dvc repro  "
        f"# fastest within 0.1 pp of it"
    )
    print(
        f"  python src/tune.py {study_flags} --register --pick smallest:0.1  # smallest within "
        f"0.1 pp"
    )


def announce(
    study: optuna.Study,
    rdb: RDBStorage,
    tune: tune_params.TuneParams,
    space: list[str],
    fixed: dict[str, Any],
) -> None:
    limit = "" if tune.timeout_s is None else f", for at most {clock_time(tune.timeout_s)}"
    print(
        f"study {tune.study} in {redact.uri(rdb.url)}: {len(study.trials)} trials so "
        f"far; this worker runs up to {tune.n_trials}{limit}"
    )
    print(f"searching {', '.join(space)}")
    if tune.several:
        print(
            f"objectives {', '.join(tune.objectives)}: no pruning (Optuna prunes single-"
            f"objective studies only), so every trial trains all its epochs"
        )
    if tune.constraints:
        bounds = coordination.constraints_of(tune)
        print(f"bounds: {', '.join(f'{name} {bound}' for name, bound in bounds.items())}")
    if fixed:
        print(f"fixed in every trial: {', '.join(f'{k}={v}' for k, v in fixed.items())}")


def flags(tune: tune_params.TuneParams) -> str:
    """The options that name the study, for the commands the user is told to run next."""
    if not tune.storage:
        return f"--study {tune.study}"
    # The URL's password is never printed: where it came from a variable ($OPTUNA_STORAGE is
    # the README's way), the hint names the variable, so it runs as printed.
    name = storage.variable(tune.storage)
    if name is None and os.environ.get(STORAGE_VARIABLE) == tune.storage:
        name = STORAGE_VARIABLE
    shown = f'"${name}"' if name else redact.uri(tune.storage)
    return f"--study {tune.study} --storage {shown}"


def act_on_best(params: config.Params, apply: bool, register: bool, pick: Pick) -> None:
    """--apply / --register: the trial `pick` chooses so far, without running a trial."""
    quiet_optuna()
    store.connect(store.tracking_uri())
    study, _, parent_id, _ = coordination.joined(params, existing=True)
    best = summary.best_of(study, pick)
    print(
        f"study {params.tune.study}: {pick.describe()} of {len(study.trials)} is trial "
        f"{best['trial']}: {front.shown(best['measures'])}"
    )
    if apply:
        changed = params_file.set_sections(summary.trained_with(summary.rebuilt(params, best)))
        print(f"params.yaml: set {', '.join(changed) or 'nothing'}; run `dvc repro` to train it")
    if register:
        splits, scaling = training.load_inputs()
        trainer = objective.Objective(splits, scaling, parent_id, params)
        register_best(trainer, params.tune.study, best, params.tracking.registered_model)
