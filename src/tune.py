"""Tune: data/processed/{train,val}.npz + params.tune -> an Optuna study, MLflow runs, best params.

    python src/tune.py                       # defaults from params.yaml's `tune` section
    python src/tune.py --n-trials 5 --timeout 600 --study quick
    python src/tune.py --apply               # also write the winner into params.yaml
    python src/tune.py --register            # also register the winner as `challenger`

Every trial trains with training.fit (the project's one training loop) on the training split and is
scored by validation accuracy; the test split is never read. Start the same command in several
terminals to run workers in parallel: they join the same study, and a study resumes where it
stopped. The default storage is a SQLite file with a 60 s lock timeout and heartbeats, so a
killed worker's trial is marked FAIL (by the next worker to start a trial) and retried once.
"""

from __future__ import annotations

import runtime  # first: quiets the backends' start-up logging before keras loads them

# isort: split

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import matplotlib
import optuna
from filelock import FileLock
from matplotlib import pyplot
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from ruamel.yaml import YAML

import config
import data
import files
import registry
import studies
import tracking
import training
from errors import PipelineError, exit_on_error

matplotlib.use("Agg")
# optuna.visualization.matplotlib is marked experimental; its warning is noise for our users.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


# The last epoch at which a trial may be pruned. Trials differ in epochs, so their cosine schedules
# differ in length: at epoch 4 a 12-epoch trial is at 77% of its peak learning rate and a 30-epoch
# one at 96%, but at epoch 9 at 15% and 80%, and rungs that late stop the long trials that end
# best (README, Pruning).
LAST_PRUNE_EPOCH = 4


class EarlyOnly(optuna.pruners.BasePruner):
    """Ask `inner` only up to `last_step`; a trial past it runs to the end of its schedule."""

    def __init__(self, inner: optuna.pruners.BasePruner, last_step: int) -> None:
        self.inner, self.last_step = inner, last_step

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        return step is not None and step <= self.last_step and self.inner.prune(study, trial)


def pruner(name: str) -> optuna.pruners.BasePruner:
    """Steps are epochs trained (see EpochReport), and nothing is pruned after LAST_PRUNE_EPOCH.
    Decile: at each epoch, stop a trial whose best so far is below the top tenth of the complete
    trials at that epoch (after one complete trial). The bar is set by the winners so far, so it
    rises as TPE closes in on good regions. Quartile: the same with the top quarter. Median: the
    same with the median, after 3 complete trials. Successive halving: after 1 and 4 epochs
    only the best quarter of all trials that got there go on; that history includes TPE's
    random start-up trials, so once TPE samples well nearly every trial is promoted. Hyperband:
    halving's rungs, hedged over brackets that prune later (wrapped, it no longer shows TPE its
    brackets: Optuna looks for a HyperbandPruner on the study). bench/bench_tune.py measures
    them against no pruning."""
    inner = {
        "decile": lambda: optuna.pruners.PercentilePruner(10.0, n_startup_trials=1),
        "quartile": lambda: optuna.pruners.PercentilePruner(25.0, n_startup_trials=1),
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3),
        "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=4
        ),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=LAST_PRUNE_EPOCH, reduction_factor=4
        ),
        "none": optuna.pruners.NopPruner,
    }[name]()
    return EarlyOnly(inner, LAST_PRUNE_EPOCH)


class EpochReport(keras.callbacks.Callback):
    """Report each epoch's validation accuracy at step = epochs trained, then ask to prune.

    The step is the resource spent: a trial stopped at the 4-epoch rung has cost 4 epochs
    whatever its schedule's length. (Steps in percent of the schedule made stopping a 24-epoch
    trial at "10%" cost 3 epochs, and long schedules won such rungs, so every complete trial was
    a long one: 2.1x at best, README.)"""

    def __init__(self, trial: optuna.Trial) -> None:
        super().__init__()
        self.trial = trial

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        accuracy = float(logs["val_accuracy"])
        print(
            f"trial {self.trial.number} epoch {epoch + 1}/{self.params['epochs']}: "
            f"val_accuracy {accuracy:.4f}",
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


class Objective:
    """Train one candidate with training.fit and return its final validation accuracy."""

    def __init__(
        self,
        splits: data.Splits,
        scaling: dict[str, float],
        parent_id: str,
        rdb: RDBStorage | None = None,  # None: an in-memory study, one process, no orphans
    ) -> None:
        self.splits, self.scaling, self.parent_id, self.rdb = splits, scaling, parent_id, rdb
        params = config.load()
        self.space = params.tune.space
        self.device = runtime.configure(params.train.precision)

    def __call__(self, trial: optuna.Trial) -> float:
        if self.rdb is not None:
            studies.sign_in(self.rdb, trial)
            studies.fail_orphans(self.rdb, trial.study)
            failed = trial.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            tracking.fail_dead_trial_runs(self.parent_id, [t.number for t in failed])
        chosen = suggest(trial, self.space)
        params = config.load(overrides=overrides(chosen))
        keras.backend.clear_session()  # free the previous trial's graphs (memory grows otherwise)
        with tracking.trial_run(self.parent_id, trial.number, chosen) as outcome:
            try:
                fitted = self.fit(params, [EpochReport(trial)])
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
            callbacks=[*callbacks, tracking.EpochMetrics()],
        )


def overrides(chosen: dict[str, Any]) -> list[str]:
    return [f"{key}={value}" for key, value in chosen.items()]


def register_best(objective: Objective, study: str, best: dict[str, Any], name: str) -> None:
    """Retrain the best trial's params (same seed: on CPU, the same weights) and register the
    model as `challenger`; tuning never reads the test set, so `champion` is evaluate's call."""
    print(f"retraining trial {best['trial']} to register it ...", flush=True)
    params = config.load(overrides=overrides(best["params"]))
    keras.backend.clear_session()
    with tracking.retrain_run(objective.parent_id, best):
        fitted = objective.fit(params)
        val = fitted.final()["val_accuracy"]
        tags = {"study": study, "trial": best["trial"], "trial_val_accuracy": best["value"]}
        version = registry.register_challenger(
            fitted.model, objective.splits.val.x[:5], name, tags | {"val_accuracy": val}
        )
    print(
        f"registered {name} version {version} as challenger: val_accuracy {val:.4f} "
        f"(the trial's: {best['value']:.4f})"
    )


def report_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    value = "" if trial.value is None else f" val_accuracy={trial.value:.4f}"
    seconds = trial.duration.total_seconds() if trial.duration else 0
    print(
        f"trial {trial.number:3d} {trial.state.name:8s}{value} ({seconds:.0f} s) {trial.params}",
        flush=True,
    )


def figures(study: optuna.Study) -> dict[str, Any]:
    """Optuna's standard plots; those a small study cannot draw yet are left out."""
    plots = optuna.visualization.matplotlib
    makers = {
        "optimization_history": plots.plot_optimization_history,
        "param_importances": plots.plot_param_importances,
        "parallel_coordinate": plots.plot_parallel_coordinate,
        "intermediate_values": plots.plot_intermediate_values,
    }
    drawn = {}
    for name, make in makers.items():
        try:
            axes = make(study)
        except (ValueError, RuntimeError) as err:  # e.g. importances need 2+ complete trials
            print(f"plot {name} skipped: {err}")
            continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        pyplot.close(figure)  # Optuna draws with pyplot, which holds figures until closed
        drawn[name] = figure
    return drawn


def best_of(study: optuna.Study) -> dict[str, Any]:
    try:
        best = study.best_trial
    except ValueError as err:
        raise PipelineError(f"study {study.study_name} has no complete trial yet") from err
    return {"value": best.value, "trial": best.number, "params": best.params}


def round_trip_yaml() -> YAML:
    """Round-trip YAML that writes params.yaml back in its own style (indents, widths, null)."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096  # never re-wrap a line
    yaml.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return yaml


def apply_to_params(best_params: dict[str, Any], path: Path = config.PARAMS_FILE) -> None:
    """Write only the tuned keys into params.yaml, keeping its comments and layout."""
    yaml = round_trip_yaml()
    tree = yaml.load(path.read_text())
    for key, value in best_params.items():
        config.set_path(tree, key, value)
    with files.atomic_path(path) as tmp:
        with tmp.open("w") as handle:
            yaml.dump(tree, handle)
        config.load(tmp)  # an invalid result never replaces params.yaml


def summarize(study: optuna.Study, parent_id: str, apply: bool) -> dict[str, Any]:
    best = best_of(study)
    tracking.log_study_summary(parent_id, figures(study), study.trials_dataframe(), best)
    with files.atomic_path(config.BEST_PARAMS_FILE) as tmp, tmp.open("w") as handle:
        YAML().dump(best, handle)
    print(f"best: trial {best['trial']}, val_accuracy {best['value']:.4f}, {best['params']}")
    print(f"written to {config.BEST_PARAMS_FILE.relative_to(config.ROOT)}")
    if apply:
        apply_to_params(best["params"])
        print("params.yaml updated with the tuned keys: run `dvc repro` to retrain the winner")
    else:
        print("to retrain the winner with `dvc repro`, rerun with --apply (or edit params.yaml)")
    return best


def parse_args(defaults: config.TuneParams, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--n-trials",
        type=given(int, defaults.n_trials),
        default=defaults.n_trials,
        help="this worker's",
    )
    parser.add_argument(
        "--timeout",
        type=given(float, defaults.timeout_s),
        default=defaults.timeout_s,
        help="seconds",
    )
    parser.add_argument("--study", type=given(str, defaults.study), default=defaults.study)
    parser.add_argument("--storage", default=defaults.storage, help="RDB URL (default: sqlite)")
    parser.add_argument("--seed", type=given(int, defaults.seed), default=defaults.seed)
    parser.add_argument("--apply", action="store_true", help="write the winner to params.yaml")
    parser.add_argument(
        "--register",
        action="store_true",
        help="retrain the winner and register it in MLflow as `challenger`",
    )
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="only log the study's plots, table and best params (no trials)",
    )
    return parser.parse_args(argv)


def given(kind: type, default: Any) -> Callable[[str], Any]:
    """An option's parser where "" means params.yaml's value (MLproject passes every parameter)."""

    def parse(text: str) -> Any:
        return kind(text) if text else default

    parse.__name__ = kind.__name__  # argparse names it in errors: "invalid int value: 'x'"
    return parse


def open_study(name: str, rdb: RDBStorage, pruner_name: str, existing: bool) -> optuna.Study:
    """Join (or start) the study; with `existing`, a missing one is an error, not a new study."""
    if existing:
        if name not in optuna.get_all_study_names(rdb):
            raise PipelineError(
                f"no study named {name!r} in {rdb.url}; check --study/--storage, or run "
                "without --summary-only to start it"
            )
        return optuna.load_study(study_name=name, storage=rdb, pruner=pruner(pruner_name))
    return optuna.create_study(
        study_name=name,
        storage=rdb,
        direction="maximize",
        load_if_exists=True,
        pruner=pruner(pruner_name),
    )


def run(argv: list[str] | None = None) -> None:
    params = config.load()
    args = parse_args(params.tune, argv)
    tracking.connect(tracking.tracking_uri())  # a dead server fails here, before a study exists
    splits, scaling = training.load_inputs()
    studies.STUDIES_DB.parent.mkdir(exist_ok=True)
    # Workers started together would race to create the tables and the parent run: take turns.
    with FileLock(studies.STUDIES_LOCK):
        study_storage = studies.storage(args.storage, params.tune)
        study = open_study(args.study, study_storage, params.tune.pruner, args.summary_only)
        parent_id = tracking.study_run(params.tracking.experiment, args.study, study_storage.url)
    # Seeded for reproducibility; offset by the trials already run so that a worker joining a
    # study (or resuming it) does not replay the first worker's draws.
    study.sampler = optuna.samplers.TPESampler(seed=args.seed + len(study.trials))
    objective = Objective(splits, scaling, parent_id, study_storage)  # fails orphans per trial
    if not args.summary_only:
        callbacks = [report_trial]
        if params.tune.max_trials:
            callbacks.append(optuna.study.MaxTrialsCallback(params.tune.max_trials))
        print(
            f"study {args.study} in {study_storage.url}: {len(study.trials)} trials so far; "
            f"MLflow parent run {parent_id}"
        )
        try:
            study.optimize(
                objective,
                n_trials=args.n_trials,
                timeout=args.timeout,
                callbacks=callbacks,
                gc_after_trial=True,
            )
        except KeyboardInterrupt:
            print(
                f"\ninterrupted: the running trial is marked FAIL; study {args.study} is intact."
                f" Resume with the same command (python src/tune.py --study {args.study}).",
                file=sys.stderr,
            )
            sys.exit(130)
    best = summarize(study, parent_id, args.apply)
    if args.register:
        register_best(objective, args.study, best, params.tracking.registered_model)


@exit_on_error
def main() -> None:
    run()


if __name__ == "__main__":
    main()
