"""stderr_filter: TensorFlow's start-up lines on fd 2 are dropped; everything else passes, even
from a process that dies hard."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from conftest import REPO, venv_env

# What TensorFlow writes before a stage's own line, then a real error in two writes.
WRITES = f"""
import os, sys
sys.path.insert(0, {str(REPO / "src")!r})
from common import stderr_filter
stderr_filter.start()
absl = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
os.write(2, absl + b"\\n")
os.write(2, b"I0000 00:00:1795739037.722984    9172 port.cc:153] oneDNN custom operations\\n")
os.write(2, b"kept: the stage's own line\\n")
os.write(2, b"E0000 00:00:1795739044.29    9172 cuda_platform.cc:52] failed call to cuInit: x\\n")
os.write(2, b"E0000 00:00:1795739044.29    9172 other.cc:7] a real error")
os.write(2, b" in two writes\\n")
print("on stdout")
"""


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=venv_env(), timeout=60
    )


def test_known_native_lines_are_dropped_and_the_rest_is_kept_in_order():
    result = run(WRITES + 'raise RuntimeError("a traceback still shows")\n')
    lines = result.stderr.splitlines()
    assert lines[:2] == [
        "kept: the stage's own line",
        "E0000 00:00:1795739044.29    9172 other.cc:7] a real error in two writes",
    ]
    assert lines[-1] == "RuntimeError: a traceback still shows" and result.returncode == 1
    assert result.stdout == "on stdout\n"


@pytest.mark.parametrize(
    ("death", "status"),
    [("os.abort()", -signal.SIGABRT), ("os._exit(3)", 3), ("os.kill(os.getpid(), 9)", -9)],
)
def test_a_process_that_dies_hard_still_shows_its_last_lines(death, status):
    """The last lines before a crash are the ones that explain it; no exit handler runs here."""
    result = run(WRITES + f'os.write(2, b"last words\\n")\n{death}\n')
    assert result.returncode == status
    assert result.stderr.splitlines()[-1] == "last words", result.stderr
    assert "oneDNN" not in result.stderr
