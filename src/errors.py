"""The one way a stage reports a failure: a single clear line and a non-zero exit, no traceback.

Library errors the user can act on (an MLflow store that is locked, a server answering 500) are
turned into that line by translators their wrapper module registers (tracking.py does), so this
module needs no library. SIGTERM, what `docker stop`, schedulers and `kill` send, is handled
like Ctrl-C: `finally` blocks run, so runs end KILLED and temp files are removed. Either signal is
held back while database code runs (see IN_TRANSACTION).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from functools import wraps
from types import FrameType

INTERRUPTED = 130  # the shell's code for a command stopped by Ctrl-C (128 + SIGINT)
# Code that runs inside a database transaction (MLflow's and Optuna's SQL stores go through
# SQLAlchemy). An interrupt raised there can leave the transaction, and SQLite's write lock, held
# by a connection nothing closes; ending the run KILLED then waits 20 s for that lock and fails.
# So a signal that arrives there is sent again shortly, until it finds the process outside.
IN_TRANSACTION = (
    "sqlalchemy.",
    "mlflow.store.db.",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "optuna.storages._rdb.",
)
REDELIVER_AFTER_S = 0.05


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


def _terminate(signum: int, frame: FrameType | None) -> None:
    if in_transaction(frame):
        redeliver_later(signum)
        return
    raise KeyboardInterrupt(signal.Signals(signum).name)


def in_transaction(frame: FrameType | None) -> bool:
    """Whether `frame` or any of its callers runs database code (IN_TRANSACTION)."""
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(IN_TRANSACTION):
            return True
        frame = frame.f_back
    return False


def redeliver_later(signum: int) -> None:
    timer = threading.Timer(REDELIVER_AFTER_S, os.kill, (os.getpid(), signum))
    timer.daemon = True  # never keeps an exiting process alive
    timer.start()


def exit_on_error(main: Callable[[], None]) -> Callable[[], None]:
    """Report a PipelineError (or a translated library error) as `error: <message>` on stderr
    and exit 1; an interruption as one line and exit 130. Anything else is a bug: traceback."""

    @wraps(main)
    def wrapper() -> None:
        signal.signal(signal.SIGTERM, _terminate)
        signal.signal(signal.SIGINT, _terminate)
        try:
            main()
        except KeyboardInterrupt as err:
            how = str(err) or "SIGINT"
            print(
                f"error: interrupted by {how}: every file written so far is complete (writes "
                f"are atomic); rerun the same command to go on",
                file=sys.stderr,
            )
            sys.exit(INTERRUPTED)
        except Exception as err:
            known = as_pipeline_error(err)
            if known is None:
                raise
            print(f"error: {known}", file=sys.stderr)
            sys.exit(1)

    return wrapper
