"""The rules --apply and --register choose a study's trial by (`tune.py --pick RULE`); parsed
before the heavy libraries load, so a bad rule fails at once. tuning.front applies them."""

from __future__ import annotations

import math
from dataclasses import dataclass

# What `fastest` and `smallest` minimise among the trials accurate enough.
RULE_MEASURE = {"fastest": "latency_ms", "smallest": "size_kb"}


@dataclass(frozen=True)
class Pick:
    """A rule for one trial: the most accurate, or the fastest (smallest) of those within
    `tolerance_pp` percentage points of the most accurate one's validation accuracy."""

    rule: str = "accuracy"
    tolerance_pp: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Pick:
        rule, sep, tolerance = text.partition(":")
        if rule == "accuracy" and not sep:
            return cls()
        try:
            points = float(tolerance)
        except ValueError:
            points = math.nan
        if rule not in RULE_MEASURE or not (0 <= points <= 100):
            raise ValueError(
                f"{text!r} is no rule: accuracy, fastest:TOL or smallest:TOL, where TOL is "
                f"percentage points of validation accuracy (fastest:0.1)"
            )
        return cls(rule, points)

    def __str__(self) -> str:
        return self.rule if self.rule == "accuracy" else f"{self.rule}:{self.tolerance_pp:g}"

    def describe(self) -> str:
        if self.rule == "accuracy":
            return "the most accurate trial"
        return f"the {self.rule} trial within {self.tolerance_pp:g} pp of the most accurate"
