"""DVC's experiments queue when one of its workers hangs: the waits the team walkthrough and
test_team rely on end, say what they waited for, and leave no process behind. A real repo, a
real `dvc queue start`, a real worker frozen with SIGSTOP."""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from conftest import dvc, git, inside, start_queue, stop_queue, wait_for_experiments

# The stage holds its experiment open (for a file that never comes), so the worker is surely
# busy when it is frozen; bounded, so even a stage nobody ends stops on its own.
HELD_STAGE = """\
import pathlib, time
for _ in range(6000):
    if pathlib.Path("{release}").exists():
        break
    time.sleep(0.1)
pathlib.Path("out.txt").write_text("done")
"""
FIND_LIMIT_S = 120  # how long the worker and its stage may take to start


def held_repo(root: Path, release: Path) -> None:
    root.mkdir()
    git(root, "init", "-q")
    dvc(root, "init", "-q")
    (root / "held.py").write_text(HELD_STAGE.format(release=release))
    (root / "dvc.yaml").write_text(
        "stages:\n  held:\n    cmd: python held.py\n    deps: [held.py]\n    outs: [out.txt]\n"
    )
    git(root, "add", "-A")
    git(root, "commit", "-qm", "a stage that waits")


def find(
    root: Path,
    word: str,
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
) -> psutil.Process:
    """The process running in `root` or below whose command line holds `word`."""
    deadline = clock() + FIND_LIMIT_S
    while clock() < deadline:
        for process in psutil.process_iter(["cmdline", "cwd"]):
            if inside(process, root) and word in " ".join(process.info["cmdline"] or []):
                return process
        pause(0.2)
    pytest.fail(f"no process with {word!r} in {root} after {FIND_LIMIT_S} s")


def test_a_frozen_worker_fails_the_bounded_wait_and_is_ended_with_its_stage(tmp_path):
    root, release = tmp_path / "repo", tmp_path / "release"
    held_repo(root, release)
    dvc(root, "exp", "run", "--queue", "--name", "held")
    start_queue(root, jobs=1)
    worker = find(root, "exp queue-worker")
    stage = find(root, "python held.py")
    worker.send_signal(signal.SIGSTOP)  # hung: it will never record its experiment

    ticks = itertools.count(step=1000)  # a clock past the wait's 900 s limit on its second read
    with pytest.raises(pytest.fail.Exception, match=r"queued \['held'\] not done in 900 s"):
        wait_for_experiments(root, ["held"], clock=lambda: next(ticks), pause=lambda _: None)

    # `dvc queue stop --kill` ends the run it started but neither the frozen worker nor the
    # stage that run was executing: the helper ends both.
    ended = stop_queue(root)
    assert any("exp queue-worker" in line for line in ended), ended
    assert any("python held.py" in line for line in ended), ended
    assert not worker.is_running() and not stage.is_running()
    assert not [p for p in psutil.process_iter(["cmdline", "cwd"]) if inside(p, root)]
