"""The errors a user can act on: PipelineError, whose message names the cause and the fix, and
translators that turn a library's exception into one.

Library errors the user can act on (an MLflow store that is locked, a server answering 500) are
turned into that line by translators their wrapper module registers (tracking.store does), so
this module needs no library. The bootstrap prints the line and sets the exit status.
"""

from __future__ import annotations

from collections.abc import Callable


class PipelineError(Exception):
    """Bad input or environment that the user can fix; the message names the cause and the fix."""


Translator = Callable[[Exception], PipelineError | None]
_translators: list[Translator] = []


def translator(translate: Translator) -> Translator:
    """Register a function that turns a library's exception into a PipelineError (or None)."""
    _translators.append(translate)
    return translate


def as_pipeline_error(err: Exception) -> PipelineError | None:
    if isinstance(err, PipelineError):
        return err
    return next((found for t in _translators if (found := t(err)) is not None), None)
