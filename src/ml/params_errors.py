"""params.yaml's validation errors as a user reads them: one line per bad key, by its dotted
name, and for the mistakes people make, what to write instead."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError


def describe(source: str, err: ValidationError, raw: Any) -> str:
    """Every problem pydantic found, one line each, named by its dotted key."""
    lines = [f"{source} is invalid:"]
    for problem in err.errors():
        key = ".".join(str(part) for part in problem["loc"])
        why = reason(problem)
        if problem["loc"][:2] == ("tune", "space") and problem["type"] == "model_type":
            why = _not_a_dimension(raw["tune"]["space"])
        lines.append(f"  {key}: {why}" if key else f"  {why}")  # no key: a cross-check
    return "\n".join(lines)


def _not_a_dimension(space: Mapping[str, Any]) -> str:
    """For a tune.space entry that is no {low, high} or {choices}: most often a misspelled
    dimension in `-S tune.space.<dimension>.high=...`, which adds a key instead of changing one."""
    dimensions = ", ".join(key for key, dim in space.items() if isinstance(dim, dict))
    return (
        "not a search dimension ({low, high[, log]} or {choices: [...]}); "
        f"to change a bound, name one of the dimensions: {dimensions}"
    )


def reason(problem: Mapping[str, Any]) -> str:
    """Pydantic's words for one problem, as a user of params.yaml would put them."""
    if problem["type"] == "extra_forbidden":
        return "unknown key (check its spelling)"
    return problem["msg"].removeprefix("Value error, ")
