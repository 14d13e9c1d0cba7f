"""Drop known start-up lines that native libraries write straight to file descriptor 2.

TensorFlow 2.21 logs through absl before `absl::InitializeLog()` is called, and such messages
ignore TF_CPP_MIN_LOG_LEVEL (tensorflow/tensorflow#100442, abseil/abseil-cpp#1957, both open):
every process that imports it prints oneDNN and CUDA-driver notes, and on a machine without a
GPU an `E0000 ... failed call to cuInit` that is no error at all. Python cannot filter what C++
writes, so fd 2 is routed through a pipe and a thread copies every other line to the real
stderr, as it comes (tracebacks and the stages' own messages included).
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

# absl's INFO and WARNING lines ("I0000 00:00:1795739037.722984    9172 port.cc:153] ...") and
# the two ERROR lines TensorFlow prints on every CPU-only run.
NOISE = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IW]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
    rb"|E\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit"
    rb"|E\d{4} [\d:.]+ +\d+ node_def_util\.cc:\d+\] NodeDef mentions attribute "
    rb"use_unbounded_threadpool"
)
DRAIN_S = 2.0  # at exit, how long to wait for the copy of the last lines


def filter_lines(noise: re.Pattern[bytes] = NOISE) -> None:
    """From now on, lines on fd 2 that match `noise` at their start are dropped."""
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    copier = threading.Thread(target=copy, args=(read_end, real, noise), daemon=True)
    copier.start()
    atexit.register(restore, real, copier)


def copy(source: int, target: int, noise: re.Pattern[bytes]) -> None:
    pending = b""
    while chunk := os.read(source, 65536):
        *lines, pending = (pending + chunk).split(b"\n")
        kept = [line + b"\n" for line in lines if not noise.match(line)]
        if kept:
            os.write(target, b"".join(kept))
    if pending and not noise.match(pending):
        os.write(target, pending)
    os.close(source)


def restore(real: int, copier: threading.Thread) -> None:
    """Put the real stderr back on fd 2, which closes the pipe, and let the copy finish."""
    sys.stderr.flush()
    os.dup2(real, 2)
    copier.join(DRAIN_S)  # a child process that kept the pipe open must not hang our exit
