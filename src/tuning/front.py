"""Choosing a study's model: its Pareto front (the feasible trials no other trial beats on every
objective) and the rules --apply and --register pick a trial by (`--pick`).

Every complete trial records all measures (objective.Objective.measured), so any study, even one
that optimised accuracy alone, can be picked from by speed or size.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import optuna
import pandas as pd
from matplotlib import pyplot
from optuna.trial import FrozenTrial, TrialState

from common.errors import PipelineError
from tuning.pick import RULE_MEASURE, Pick

MEASURES_ATTR = "measures"  # every measure of the trial's model: tune_params.MEASURES
SECONDS_ATTR = "train_seconds"  # its training time, a cost that compares trials
# Accuracies are fractions of 5000 images: a tolerance's edge must not fall to float rounding.
EPSILON = 1e-9


def measures(trial: FrozenTrial) -> dict[str, float]:
    """The trial's measures; a trial older than MEASURES_ATTR has its accuracy only."""
    return trial.user_attrs.get(MEASURES_ATTR) or {"val_accuracy": trial.values[0]}


def accuracy(trial: FrozenTrial) -> float:
    return measures(trial)["val_accuracy"]


def feasible(trial: FrozenTrial) -> bool:
    return all(excess <= 0 for excess in trial.constraints.values())


def candidates(study: optuna.Study) -> list[FrozenTrial]:
    """The complete trials inside every bound of tune.constraints."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [trial for trial in complete if feasible(trial)]


def picked(trials: list[FrozenTrial], pick: Pick) -> FrozenTrial | None:
    """The trial `pick` chooses (None: no trials). Ties go to the more accurate, then the
    earlier trial, so the choice is the same on every machine that reads the study."""
    if not trials:
        return None
    best = max(trials, key=lambda trial: (accuracy(trial), -trial.number))
    if pick.rule == "accuracy":
        return best
    measure = RULE_MEASURE[pick.rule]
    floor = accuracy(best) - pick.tolerance_pp / 100 - EPSILON
    within = [t for t in trials if accuracy(t) >= floor and measure in measures(t)]
    if not within:
        raise PipelineError(
            f"the trials of this study predate the {measure} measure: pick by accuracy, or "
            f"search a new --study"
        )
    return min(within, key=lambda t: (measures(t)[measure], -accuracy(t), t.number))


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """The front, most accurate first; a single-objective study's is its best trial."""
    if len(study.directions) == 1:
        best = picked(candidates(study), Pick())
        return [best] if best is not None else []
    return sorted(study.best_trials, key=lambda trial: (-accuracy(trial), trial.number))


def table(study: optuna.Study) -> pd.DataFrame:
    """One row per complete trial: its measures and training time, whether it is feasible and
    on the front, and what it searched; the front first, most accurate first."""
    on_front = {trial.number for trial in pareto_front(study)}
    rows = [
        {
            "trial": trial.number,
            **measures(trial),
            "train_seconds": trial.user_attrs.get(SECONDS_ATTR),
            "feasible": feasible(trial),
            "pareto": trial.number in on_front,
            **trial.params,
        }
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ]
    if not rows:
        return pd.DataFrame(columns=["trial", "val_accuracy", "feasible", "pareto"])
    frame = pd.DataFrame(rows)
    return frame.sort_values(["pareto", "val_accuracy", "trial"], ascending=[False, False, True])


def figure(study: optuna.Study, objectives: list[str]) -> Any | None:
    """Optuna's Pareto plot of accuracy against the next objective: the front, the trials it
    dominates, and those outside the bounds in their own colour. None before a complete trial."""
    if len(objectives) < 2 or not study.get_trials(states=(TrialState.COMPLETE,)):
        return None
    with warnings.catch_warnings():  # experimental, and "no feasible trials" when none is
        warnings.simplefilter("ignore")
        axes = optuna.visualization.matplotlib.plot_pareto_front(
            study,
            targets=lambda trial: (trial.values[0], trial.values[1]),
            target_names=objectives[:2],
        )
    pyplot.close(axes.figure)  # Optuna draws with pyplot, which holds figures until closed
    return axes.figure


def shown(scores: dict[str, float], first: Sequence[str] = ()) -> str:
    """Measures as tune.py prints them, `first` first: val_accuracy 0.9842, latency_ms 0.833,
    params 568,842, size_kb 8,939."""
    order = [*first, *(name for name in scores if name not in first)]
    formats = {"val_accuracy": ".4f", "latency_ms": ".3g", "params": ",.0f", "size_kb": ",.0f"}
    return ", ".join(f"{name} {scores[name]:{formats.get(name, '.4g')}}" for name in order)


def described(trial: FrozenTrial, objectives: list[str]) -> str:
    """One line of the front: the objectives first, then the other measures."""
    return f"trial {trial.number}: {shown(measures(trial), objectives)}"
