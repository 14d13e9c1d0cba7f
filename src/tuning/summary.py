"""A study's outcome: the trial --apply and --register use (tuning.front picks it), and Optuna's
plots."""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from matplotlib import pyplot
from optuna.trial import TrialState

from common.errors import PipelineError
from ml import config
from tuning import coordination, front
from tuning.pick import Pick

# What each trial trained with: the whole train section and the seed, so that --apply and
# --register rebuild exactly that trial, whatever params.yaml says by then.
TRAINED_ATTR = "trained_with"


def best_so_far(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The most accurate feasible trial (of any study, one objective or several)."""
    return front.picked(front.candidates(study), Pick())


def figures(study: optuna.Study, objectives: list[str]) -> dict[str, Any]:
    """Optuna's standard plots, of validation accuracy where a study has several objectives,
    and its Pareto front; those a study cannot draw yet (importances need 2 complete trials) are
    left out without a word: the others and the trials table say enough."""
    plots = optuna.visualization.matplotlib
    accuracy = {"target": lambda trial: trial.values[0], "target_name": objectives[0]}
    by_accuracy = accuracy if len(objectives) > 1 else {}
    makers = {
        "optimization_history": lambda: plots.plot_optimization_history(study, **by_accuracy),
        "param_importances": lambda: plots.plot_param_importances(study, **by_accuracy),
        "parallel_coordinate": lambda: plots.plot_parallel_coordinate(study, **by_accuracy),
        "intermediate_values": lambda: plots.plot_intermediate_values(study),
    }
    if not any(trial.intermediate_values for trial in study.get_trials(deepcopy=False)):
        del makers["intermediate_values"]  # trials of several objectives report no epochs: blank
    drawn = {}
    pareto = front.figure(study, objectives)
    if pareto is not None:
        drawn["pareto_front"] = pareto
    for name, make in makers.items():
        with warnings.catch_warnings():  # e.g. "trial 3 is omitted": pruned trials have no value
            warnings.simplefilter("ignore")
            try:
                axes = make()
            except (ValueError, RuntimeError):
                continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        pyplot.close(figure)  # Optuna draws with pyplot, which holds figures until closed
        drawn[name] = figure
    return drawn


def no_candidate(study: optuna.Study) -> str:
    """Why no trial can be picked, and what to do."""
    name = study.study_name
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if not complete:
        return f"study {name} has no complete trial yet: run `python src/tune.py --study {name}`"
    bounds = study.user_attrs.get(coordination.GOAL_ATTR, {}).get("constraints")
    return (
        f"none of the {complete} complete trials of study {name} is inside its "
        f"tune.constraints {bounds}: search on (`python src/tune.py --study {name}`), or "
        f"search a new --study with looser bounds"
    )


def best_of(study: optuna.Study, pick: Pick | None = None) -> dict[str, Any]:
    """The trial `pick` chooses (default: the most accurate), as --apply and --register use
    it: the fixed values and the searched ones, what it trained with and what it measured."""
    pick = pick or Pick()
    best = front.picked(front.candidates(study), pick)
    if best is None:
        raise PipelineError(no_candidate(study))
    fixed = study.user_attrs.get(coordination.FIXED_ATTR, {})
    return {
        "value": front.accuracy(best),
        "trial": best.number,
        "pick": str(pick),
        "params": fixed | best.params,  # what the command and the search chose
        "trained_with": best.user_attrs.get(TRAINED_ATTR),  # all it trained with
        "measures": front.measures(best),
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
