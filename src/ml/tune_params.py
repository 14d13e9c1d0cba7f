"""params.yaml's tune section: the search space, what the search optimises and within what
bounds, and how its workers share a study."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import Field, model_validator

from ml.params_types import PositiveInt, Strict


class Dimension(Strict):
    """One searched knob: an int or float range (optionally log-scaled), or a list of choices."""

    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    choices: list[Any] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _range_or_choices(self) -> Dimension:
        if (self.choices is None) == (self.low is None or self.high is None):
            raise ValueError("give either low and high, or choices")
        if self.choices is None and self.low >= self.high:
            raise ValueError("low must be below high")
        return self


# tune.py builds each; bench/bench_tune.py measures them (README, Pruning).
PrunerName = Literal["decile", "quartile", "median", "halving", "hyperband", "none"]
PRUNERS: tuple[str, ...] = get_args(PrunerName)

# What every trial measures of its model (ml.footprint), each usable as an objective or a bound:
# its validation accuracy (higher is better), and the time one image takes through it on this
# machine, its weight count and its saved size (lower is better).
Measure = Literal["val_accuracy", "latency_ms", "params", "size_kb"]
MEASURES: tuple[str, ...] = get_args(Measure)
HIGHER_IS_BETTER = frozenset({"val_accuracy"})


class Bound(Strict):
    """A constraint on one measure: trials outside it are infeasible and never win."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> Bound:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError("min must be below max")
        return self

    def excess(self, value: float) -> float:
        """How far `value` lies outside the bound (Optuna's constraint: <= 0 is feasible)."""
        over = value - self.max if self.max is not None else float("-inf")
        under = self.min - value if self.min is not None else float("-inf")
        return max(over, under)


class TuneParams(Strict):
    study: str = Field(min_length=1)
    storage: str | None  # None: the SQLite default; ${NAME}: the URL in $NAME (tuning.storage)
    n_trials: PositiveInt  # per worker process
    max_trials: PositiveInt | None  # for the whole study, across workers
    timeout_s: Annotated[float, Field(gt=0)] | None
    seed: Annotated[int, Field(ge=0)]
    pruner: PrunerName
    heartbeat_s: PositiveInt  # a RUNNING trial's worker proves it is alive this often
    grace_s: PositiveInt  # after this long without a heartbeat its trial is FAIL, retried once
    space: dict[str, Dimension] = Field(min_length=1)  # dotted params path -> dimension
    objectives: list[Measure] = Field(["val_accuracy"], min_length=1)
    constraints: dict[Measure, Bound] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _accuracy_first(self) -> TuneParams:
        """The front is drawn, printed and picked from by accuracy, so accuracy leads."""
        if self.objectives[0] != "val_accuracy":
            raise ValueError(
                "objectives: the first must be val_accuracy, e.g. [val_accuracy, latency_ms]"
            )
        if len(set(self.objectives)) < len(self.objectives):
            raise ValueError("objectives: each measure once")
        return self

    @property
    def directions(self) -> list[str]:
        """Optuna's direction of each objective, in order."""
        return ["maximize" if name in HIGHER_IS_BETTER else "minimize" for name in self.objectives]

    @property
    def several(self) -> bool:
        """Whether the search has several objectives (a Pareto front, no pruning)."""
        return len(self.objectives) > 1
