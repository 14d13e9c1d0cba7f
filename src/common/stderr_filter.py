"""Drop known start-up lines that native libraries write straight to file descriptor 2.

TensorFlow 2.21 logs through absl before `absl::InitializeLog()` is called, and such messages
ignore TF_CPP_MIN_LOG_LEVEL (tensorflow/tensorflow#100442, abseil/abseil-cpp#1957, both open):
every process that imports it prints oneDNN and CUDA-driver notes, and on a machine without a
GPU an `E0000 ... failed call to cuInit` that is no error at all. Python cannot filter what C++
writes, so fd 2 becomes a pipe, and a child process copies every other line to the real stderr
as it comes. A child, not a thread: when the process dies hard (abort, segfault, `os._exit`,
SIGKILL) the child still reads the pipe to its end, so the lines that explain the crash are shown.
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import sys
import time

from common import redact

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


def start(noise: re.Pattern[bytes] = NOISE) -> None:
    """From now on, lines on fd 2 that match `noise` at their start are dropped. Call it before
    the process starts threads (the bootstrap does, before any heavy import): it forks."""
    if not hasattr(os, "fork"):  # Windows: the lines stay
        return
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(write_end)
        _run_filter(read_end, noise)
    os.close(read_end)
    real = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)
    atexit.register(_restore, real, child)


def _run_filter(source: int, noise: re.Pattern[bytes]) -> None:
    """The child: copy until every writer is gone, then exit without running the parent's
    interpreter shutdown. Ctrl-C reaches the whole process group: this child ignores it and
    ends at the pipe's end instead, after the parent's last line."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):  # hold no reader's stdin or stdout open past the parent
        os.dup2(devnull, fd)
    try:
        copy(source, 2, noise)
    finally:
        os._exit(0)


def copy(source: int, target: int, noise: re.Pattern[bytes]) -> None:
    """Copy line by line, dropping `noise` and hiding secrets (a library's log line or a
    traceback may quote a URL with its password)."""
    secrets = redact.known_secrets()
    pending = b""
    while chunk := os.read(source, 65536):
        *lines, pending = (pending + chunk).split(b"\n")
        kept = [hidden(line, secrets) + b"\n" for line in lines if not noise.match(line)]
        if kept:
            os.write(target, b"".join(kept))
    if pending and not noise.match(pending):
        os.write(target, hidden(pending, secrets))


def hidden(line: bytes, secrets: list[str]) -> bytes:
    text = line.decode("utf-8", "surrogateescape")  # any bytes through unchanged
    return redact.text(text, secrets).encode("utf-8", "surrogateescape")


def _restore(real: int, child: int) -> None:
    """Put the real stderr back on fd 2, which ends the pipe, and let the child copy the rest;
    a grandchild that kept the pipe open must not hold up this exit for long."""
    sys.stderr.flush()
    os.dup2(real, 2)
    deadline = time.monotonic() + DRAIN_S
    while os.waitpid(child, os.WNOHANG) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.01)
