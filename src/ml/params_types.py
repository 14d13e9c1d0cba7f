"""The building blocks of params.yaml's sections (ml.config, ml.tune_params): strict models, and
the number types several sections share."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

PositiveInt = Annotated[int, Field(gt=0)]
Rate = Annotated[float, Field(ge=0.0, lt=1.0)]


class Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default. Strict types:
    `epochs: true` or `epochs: 3.5` is an error, not 1 or 3 (an int still passes as a float)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
