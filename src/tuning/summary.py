"""A study's outcome: its best trial as --apply and --register use it, and Optuna's plots."""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from matplotlib import pyplot

from common.errors import PipelineError
from ml import config
from tuning import coordination

# What each trial trained with: the whole train section and the seed, so that --apply and
# --register rebuild exactly that trial, whatever params.yaml says by then.
TRAINED_ATTR = "trained_with"


def best_so_far(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


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
    fixed = study.user_attrs.get(coordination.FIXED_ATTR, {})
    return {
        "value": best.value,
        "trial": best.number,
        "params": fixed | best.params,  # what the command and the search chose
        "trained_with": best.user_attrs.get(TRAINED_ATTR),  # all it trained with
    }


def trained_with(params: config.Params) -> dict[str, Any]:
    return {"seed": params.seed, "train": params.train.model_dump(mode="json")}


def rebuilt(params: config.Params, best: dict[str, Any]) -> config.Params:
    """The params the best trial trained with; `params` gives the sections trials never change.
    A trial of a study older than TRAINED_ATTR: params.yaml's train section, with its values."""
    recorded = best["trained_with"]
    if recorded is None:
        return config.with_values(params, best["params"])
    train = config.TrainParams.model_validate(recorded["train"])
    return params.model_copy(update={"seed": recorded["seed"], "train": train})
