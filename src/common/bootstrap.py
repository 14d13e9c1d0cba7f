"""The one start every entry script makes, before its heavy imports: the signal policy, quiet
libraries, and one line per failure.

    from common import bootstrap

    bootstrap.start(__name__)  # first: the policy holds while the libraries below load

    import keras ...

    def main() -> int | None: ...

    if __name__ == "__main__":
        bootstrap.run(main)

Ctrl-C or SIGTERM (what `docker stop`, schedulers and `kill` send) at any moment is one line and
exit 130. While `main` runs, the signal is raised as KeyboardInterrupt, so `finally` blocks run:
MLflow runs end KILLED and temp files are removed. Before `main` (while libraries load) and after
it, there is nothing to clean up, and the process exits at once. A signal that arrives inside
database code is sent again once the process is outside it (see IN_TRANSACTION).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from types import FrameType
from typing import NoReturn

from common import keras_backend, redact, stderr_filter
from common.errors import as_pipeline_error

INTERRUPTED = 130  # the shell's code for a command stopped by Ctrl-C (128 + SIGINT)
INTERRUPTED_LINE = (
    "error: interrupted by {signal}: every file written so far is complete (writes are atomic); "
    "rerun the same command to go on"
)
# Code that runs inside a database transaction (MLflow's and Optuna's SQL stores go through
# SQLAlchemy). An interrupt raised there can leave the transaction, and SQLite's write lock, held
# by a connection nothing closes; ending the run KILLED then waits 20 s for that lock and fails.
IN_TRANSACTION = (
    "sqlalchemy.",
    "mlflow.store.db.",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "optuna.storages._rdb.",
)
REDELIVER_AFTER_S = 0.05
# What the libraries read from the environment when they load: set unless the user set them.
LIBRARY_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow's C++ start-up notes (stderr_filter: the rest)
    # TensorFlow's oneDNN kernels, which it turns on by itself only on CPUs with AVX-512 VNNI or
    # newer: on an AVX2-only EPYC its own kernels take 4-6x as long for the first max pool and
    # its gradient, train this CNN 1.4-1.7x and serve it 2.4x slower (bench/README.md,
    # "TensorFlow's oneDNN kernels on every CPU"). Runs stay deterministic (tests/test_train.py),
    # rounded slightly differently than without.
    "TF_ENABLE_ONEDNN_OPTS": "1",
    # JAX's counterpart of TF's memory growth: take GPU memory as needed, not 75% up front.
    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
    # MLflow's chatter with nothing to act on: INFO lines while a model is logged ("Detected uv
    # project"), a progress bar for one small download, and against a server "View run ... at:
    # <url>" at each run's end (evaluate prints the one link worth following).
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MPLBACKEND": "Agg",  # figures are files: no GUI backend, also for Optuna's pyplot plots
}
QUIET_LOGGERS = {
    # A warning that this uv-made environment has no pip (the model's requirements are pinned).
    "mlflow.utils.environment": logging.ERROR,
    # MLflow's SQL store logs each database error with its traceback (~90 lines) before raising
    # it, and the stage turns that error into one line (tracking.store.store_failure).
    "mlflow.store.db.utils": logging.CRITICAL,
}
# Warnings with nothing to act on (the start of their message): a local .npz fits two kinds of
# MLflow dataset source (both LocalArtifactDatasetSource). Optuna's are tuning.search's.
IGNORED_WARNINGS = ("The specified dataset source can be interpreted",)

_working = False  # whether `main` runs: then a signal is raised, else the process exits


def start(module: str, backend_from_params: bool = False) -> None:
    """Install the policy when `module` (the caller's __name__) runs as a script; importing an
    entry script (a test, a notebook) changes nothing. The scripts that train or judge models
    pass `backend_from_params`: Keras then loads the backend params.yaml names (keras_backend)."""
    if module != "__main__":
        return
    if backend_from_params and (problem := keras_backend.set_from_params()):
        print(f"error: {problem}", file=sys.stderr, flush=True)
        sys.exit(1)
    quiet_libraries()
    stderr_filter.start()
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


def quiet_libraries() -> None:
    library_environment()
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for message in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def library_environment() -> None:
    """What the libraries read when they load (LIBRARY_ENV), where the user has not set it."""
    for name, value in LIBRARY_ENV.items():
        os.environ.setdefault(name, value)


def run(main: Callable[[], int | None]) -> NoReturn:
    """Run `main` and exit with its status (None: 0). A PipelineError (or a library error a
    translator knows) is `error: <message>` on stderr and exit 1; an interruption one line and
    exit 130. Anything else is a bug: its traceback is shown."""
    global _working
    _working = True
    try:
        status = main() or 0
    except KeyboardInterrupt as err:
        _working = False
        print(INTERRUPTED_LINE.format(signal=str(err) or "SIGINT"), file=sys.stderr)
        sys.exit(INTERRUPTED)
    except Exception as err:
        _working = False
        known = as_pipeline_error(err)
        if known is None:
            raise
        print(f"error: {redact.text(str(known))}", file=sys.stderr)
        sys.exit(1)
    _working = False
    sys.exit(status)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if not _working:
        _exit_now(name)
    if in_transaction(frame):
        redeliver_later(signum)
        return
    raise KeyboardInterrupt(name)


def _exit_now(name: str) -> None:
    """Outside `main` no run is open and no file half-written: say so and go, without unwinding
    an import or the interpreter's shutdown (where a KeyboardInterrupt prints a traceback)."""
    # What `main` printed reaches a pipe's reader before the line below; a stream in the middle
    # of a write (reentrant) or closed keeps what it holds.
    with contextlib.suppress(OSError, RuntimeError, ValueError):
        sys.stdout.flush()
    os.write(2, (INTERRUPTED_LINE.format(signal=name) + "\n").encode())
    os._exit(INTERRUPTED)


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
