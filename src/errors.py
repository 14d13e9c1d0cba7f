"""The one way a stage reports bad input: a single clear message and a non-zero exit."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps


class PipelineError(Exception):
    """Bad input or environment that the user can fix; the message names the cause and the fix."""


def exit_on_error(main: Callable[[], None]) -> Callable[[], None]:
    """Turn a PipelineError into `error: <message>` on stderr and exit 1, with no traceback."""

    @wraps(main)
    def wrapper() -> None:
        try:
            main()
        except PipelineError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)

    return wrapper
