"""The Optuna search behind tune.py: trials, pruning, the study's winner and what to do with it.

Every trial trains with training.fit (the project's one training loop) on the training split and
is scored by validation accuracy; the test split is never read. The default storage is a SQLite
file with a 60 s lock timeout and heartbeats (studies.py), so workers started in several
terminals share one study, and a killed worker's trial is failed and retried once.
"""

from __future__ import annotations

import runtime  # first: quiets the backends' start-up logging before keras loads them

# isort: split

import os
import socket
import time
import warnings
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import keras
import matplotlib
import optuna
from filelock import FileLock
from matplotlib import pyplot
from optuna.storages import RDBStorage
from optuna.trial import TrialState

import config
import data
import files
import params_file
import registry
import studies
import tracking
import training
from errors import PipelineError
from search_progress import SearchProgress, clock_time

matplotlib.use("Agg")
# Each finished trial is reported once, by TrialReport; Optuna's own INFO line would repeat it,
# and its WARNING for a failed trial is a traceback of an error that exit_on_error reports in
# one line (or, for a bug, with the traceback anyway).
optuna.logging.set_verbosity(optuna.logging.ERROR)
# optuna.visualization.matplotlib is marked experimental; its warning is noise for our users.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

# The last epoch at which a trial may be pruned. Trials differ in epochs, so their cosine schedules
# differ in length: at epoch 4 a 12-epoch trial is at 77% of its peak learning rate and a 30-epoch
# one at 96%, but at epoch 9 at 15% and 80%, and rungs that late stop the long trials that end
# best (bench/README.md, Pruning).
LAST_PRUNE_EPOCH = 4
# The study remembers the train.* and seed values its command fixed with -S: its trials are only
# comparable under them, and --apply/--register need them to rebuild the winner.
FIXED_ATTR = "fixed"
# Where the study records its MLflow parent run, and how long a joining worker waits for the
# creating worker to record it (the creator does so within a second of creating the study).
PARENT_ATTR = "mlflow_parent_run"
PARENT_WAITS, PARENT_PAUSE_S = 60, 0.5
STORAGE_VARIABLE = "OPTUNA_STORAGE"  # what the README and team_stack.py export the URL as


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
        scaling: dict[str, float],
        parent_id: str,
        params: config.Params,
        fixed: dict[str, Any] | None = None,  # train.*/seed values every trial keeps
        rdb: RDBStorage | None = None,  # None: an in-memory study, one process, no orphans
        progress: SearchProgress | None = None,
    ) -> None:
        self.splits, self.scaling, self.parent_id, self.rdb = splits, scaling, parent_id, rdb
        self.fixed = fixed or {}
        self.space = searched(params.tune.space, self.fixed)
        self.progress = progress or SearchProgress(n_trials=1, timeout_s=None)
        self.device = runtime.configure(params.train.precision)

    def __call__(self, trial: optuna.Trial) -> float:
        if self.rdb is not None:
            studies.sign_in(self.rdb, trial)
            studies.fail_orphans(self.rdb, trial.study)
            failed = trial.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            tracking.fail_dead_trial_runs(self.parent_id, [t.number for t in failed])
        chosen = suggest(trial, self.space)
        params = config.load(values=self.fixed | chosen)
        keras.backend.clear_session()  # free the previous trial's graphs (memory grows otherwise)
        with tracking.trial_run(self.parent_id, trial.number, self.fixed | chosen) as outcome:
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
            callbacks=[*callbacks, tracking.EpochMetrics()],
        )


class TrialReport:
    """Optuna's callback after each trial: one line for the user, the best so far for MLflow."""

    def __init__(self, parent_id: str, progress: SearchProgress) -> None:
        self.parent_id, self.progress = parent_id, progress

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        best = best_so_far(study)
        # A pruned trial's value is its last epoch's, not a score to plot beside complete ones.
        value = trial.value if trial.state == TrialState.COMPLETE else None
        tracking.log_trial_outcome(self.parent_id, trial.number, value, best and best.value)
        if trial.state == TrialState.PRUNED:
            outcome = f"PRUNED after epoch {trial.last_step}"
        elif trial.value is not None:
            outcome = f"COMPLETE val_accuracy {trial.value:.4f}"
        else:
            outcome = trial.state.name
        leader = "" if best is None else f"; best {best.value:.4f} (trial {best.number})"
        print(
            f"trial {trial.number} {outcome} in {clock_time(seconds)}{leader}; "
            f"{self.progress.trial_ended()}",
            flush=True,
        )


def best_so_far(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def register_best(objective: Objective, study: str, best: dict[str, Any], name: str) -> None:
    """Retrain the best trial's params (same seed: on CPU, the same weights) and register the
    model as `challenger`; tuning never reads the test set, so `champion` is evaluate's call."""
    print(f"retraining trial {best['trial']} of study {study} to register it ...", flush=True)
    params = config.load(values=best["params"])
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


def figures(study: optuna.Study) -> dict[str, Any]:
    """Optuna's standard plots; those a study cannot draw yet (importances need 2 complete
    trials) are left out without a word: the others and the trials table say enough."""
    plots = optuna.visualization.matplotlib
    makers = {
        "optimization_history": plots.plot_optimization_history,
        "param_importances": plots.plot_param_importances,
        "parallel_coordinate": plots.plot_parallel_coordinate,
        "intermediate_values": plots.plot_intermediate_values,
    }
    drawn = {}
    for name, make in makers.items():
        with warnings.catch_warnings():  # e.g. "trial 3 is omitted": pruned trials have no value
            warnings.simplefilter("ignore")
            try:
                axes = make(study)
            except (ValueError, RuntimeError):
                continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        pyplot.close(figure)  # Optuna draws with pyplot, which holds figures until closed
        drawn[name] = figure
    return drawn


def best_of(study: optuna.Study) -> dict[str, Any]:
    """The winner as --apply and --register use it: the fixed values and the searched ones."""
    best = best_so_far(study)
    if best is None:
        raise PipelineError(
            f"study {study.study_name} has no complete trial yet: run "
            f"`python src/tune.py --study {study.study_name}` until one completes"
        )
    fixed = study.user_attrs.get(FIXED_ATTR, {})
    return {"value": best.value, "trial": best.number, "params": fixed | best.params}


def open_study(
    name: str, rdb: RDBStorage, pruner_name: str, existing: bool
) -> tuple[optuna.Study, bool]:
    """Join (or start) the study, and say whether this worker created it; with `existing`, a
    missing one is an error, not a new study."""
    if existing:
        if name not in optuna.get_all_study_names(rdb):
            known = ", ".join(optuna.get_all_study_names(rdb)) or "none yet"
            raise PipelineError(
                f"no study named {name!r} in {tracking.masked(rdb.url)} (studies there: {known});"
                f" run `python src/tune.py --study {name}` to search first"
            )
        return optuna.load_study(study_name=name, storage=rdb, pruner=pruner(pruner_name)), False
    try:  # the storage lets one worker create a name: it alone learns that it did
        study = optuna.create_study(
            study_name=name, storage=rdb, direction="maximize", pruner=pruner(pruner_name)
        )
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=name, storage=rdb, pruner=pruner(pruner_name)), False


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
    run_id = tracking.study_run(experiment, study.study_name, storage_url)
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id


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
    studies.STUDIES_DB.parent.mkdir(exist_ok=True)
    with FileLock(studies.STUDIES_LOCK):
        rdb = studies.storage(params.tune.storage, params.tune)
        study, created = open_study(params.tune.study, rdb, params.tune.pruner, existing)
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


def search(params: config.Params, fixed: dict[str, Any]) -> None:
    """Run this worker's share of the study, then log and print its winner and what to do next."""
    tracking.connect(tracking.tracking_uri())  # a dead server fails here, before a study exists
    splits, scaling = training.load_inputs()
    tune = params.tune
    study, rdb, parent_id, created = joined(params, existing=False)
    keep_fixed(study, fixed)
    study.sampler = optuna.samplers.TPESampler(seed=sampler_seed(tune.seed, study, created))
    progress = SearchProgress(tune.n_trials, tune.timeout_s)
    objective = Objective(splits, scaling, parent_id, params, fixed, rdb, progress)
    callbacks: list[Any] = [TrialReport(parent_id, progress)]
    if tune.max_trials:
        callbacks.append(optuna.study.MaxTrialsCallback(tune.max_trials))
    announce(study, rdb, tune, list(objective.space), fixed)
    # Ctrl-C: Optuna fails the running trial, the parent run ends KILLED, and exit_on_error
    # says that rerunning the command resumes the study.
    with tracking.searching(parent_id, lambda: still_running(study)):
        study.optimize(
            objective,
            n_trials=tune.n_trials,
            timeout=tune.timeout_s,
            callbacks=callbacks,
            gc_after_trial=True,
        )
    best = best_of(study)
    tracking.log_study_summary(parent_id, figures(study), study.trials_dataframe(), best)
    with files.atomic_path(config.BEST_PARAMS_FILE) as tmp, tmp.open("w") as handle:
        params_file.dump(best, handle)
    print(f"best: trial {best['trial']}, val_accuracy {best['value']:.4f}")
    for key, value in best["params"].items():
        print(f"  {key}: {value:.6g}" if isinstance(value, float) else f"  {key}: {value}")
    print(f"written to {config.BEST_PARAMS_FILE.relative_to(config.ROOT)}; next:")
    study_flags = flags(tune)
    print(f"  python src/tune.py {study_flags} --apply && dvc repro   # train it in the pipeline")
    print(f"  python src/tune.py {study_flags} --register   # or register it as challenger now")


def still_running(study: optuna.Study) -> bool:
    """Whether another worker still runs a trial of the study (its parent run stays open)."""
    return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def announce(
    study: optuna.Study,
    rdb: RDBStorage,
    tune: config.TuneParams,
    space: list[str],
    fixed: dict[str, Any],
) -> None:
    limit = "" if tune.timeout_s is None else f", for at most {clock_time(tune.timeout_s)}"
    print(
        f"study {tune.study} in {tracking.masked(rdb.url)}: {len(study.trials)} trials so "
        f"far; this worker runs up to {tune.n_trials}{limit}"
    )
    print(f"searching {', '.join(space)}")
    if fixed:
        print(f"fixed in every trial: {', '.join(f'{k}={v}' for k, v in fixed.items())}")


def flags(tune: config.TuneParams) -> str:
    """The options that name the study, for the commands the user is told to run next."""
    if not tune.storage:
        return f"--study {tune.study}"
    # The URL's password is never printed: where it came from $OPTUNA_STORAGE (the README's
    # way), the hint names the variable, so it runs as printed.
    given = os.environ.get(STORAGE_VARIABLE) == tune.storage
    storage = f'"${STORAGE_VARIABLE}"' if given else tracking.masked(tune.storage)
    return f"--study {tune.study} --storage {storage}"


def act_on_best(params: config.Params, apply: bool, register: bool) -> None:
    """--apply / --register: the study's best so far, without running a trial."""
    tracking.connect(tracking.tracking_uri())
    study, _, parent_id, _ = joined(params, existing=True)
    best = best_of(study)
    print(
        f"study {params.tune.study}: best is trial {best['trial']}, val_accuracy "
        f"{best['value']:.4f} of {len(study.trials)} trials"
    )
    if apply:
        params_file.set_values(best["params"])
        print(f"params.yaml: set {', '.join(best['params'])}; run `dvc repro` to train it")
    if register:
        splits, scaling = training.load_inputs()
        objective = Objective(splits, scaling, parent_id, params)
        register_best(objective, params.tune.study, best, params.tracking.registered_model)
