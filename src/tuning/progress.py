"""What a running search tells its user: which trial of how many, time spent, best so far, and
about how long is left of the worker's budget (its trials or its timeout, whichever ends first)."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from tuning import front, runs, summary


def clock_time(seconds: float) -> str:
    """0:04:05: short, and lines up in a column of them."""
    return str(datetime.timedelta(seconds=round(seconds)))


@dataclass
class SearchProgress:
    n_trials: int  # this worker's budget of trials
    timeout_s: float | None  # and of time
    clock: Callable[[], float] = time.monotonic  # tests pass their own
    finished: int = field(default=0, init=False)
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def current(self) -> str:
        """The running trial's place in the budget: "2 of 20"."""
        return f"{self.finished + 1} of {self.n_trials}"

    def left_s(self) -> float | None:
        """The mean trial so far times the trials left, capped by the timeout; None before the
        first trial ends (pruned trials are short, so the estimate improves as trials end)."""
        if self.finished == 0:
            return None
        elapsed = self.elapsed()
        left = elapsed / self.finished * (self.n_trials - self.finished)
        if self.timeout_s is not None:
            left = min(left, max(self.timeout_s - elapsed, 0.0))
        return left

    def trial_ended(self) -> str:
        """Count one more finished trial; say where the worker stands."""
        self.finished += 1
        status = f"{self.finished} of {self.n_trials} done, {clock_time(self.elapsed())} elapsed"
        left = self.left_s() or 0.0
        return f"{status}, about {clock_time(left)} left" if left else status


class TrialReport:
    """Optuna's callback after each trial: one line for the user, its scores for MLflow."""

    def __init__(self, parent_id: str, progress: SearchProgress, objectives: list[str]) -> None:
        self.parent_id, self.progress, self.objectives = parent_id, progress, objectives

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        best = summary.best_so_far(study)
        # A pruned trial's value is its last epoch's, not a score to plot beside complete ones.
        scores = None
        if trial.state == TrialState.COMPLETE:
            scores = dict(zip(self.objectives, trial.values, strict=True))
        runs.log_trial_outcome(self.parent_id, trial.number, scores, best and front.accuracy(best))
        print(
            f"trial {trial.number} {self.outcome(trial, scores)} in {clock_time(seconds)}"
            f"{self.standing(study, best)}; {self.progress.trial_ended()}",
            flush=True,
        )

    @staticmethod
    def outcome(trial: optuna.trial.FrozenTrial, scores: dict[str, float] | None) -> str:
        if trial.state == TrialState.PRUNED:
            return f"PRUNED after epoch {trial.last_step}"
        if scores is None:
            return trial.state.name
        bounds = "" if front.feasible(trial) else " (outside tune.constraints)"
        return f"COMPLETE {front.shown(scores)}{bounds}"

    def standing(self, study: optuna.Study, best: optuna.trial.FrozenTrial | None) -> str:
        """The best so far, or the size of the front for several objectives."""
        if best is None:
            return ""
        if len(self.objectives) > 1:
            size = len(front.pareto_front(study))
            return f"; Pareto front: {size} trial{'s' if size > 1 else ''}"
        return f"; best {front.accuracy(best):.4f} (trial {best.number})"
