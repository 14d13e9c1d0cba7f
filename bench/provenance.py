"""What every results file records: the commit (and whether the tree was dirty), package
versions and the machine, so a figure can be traced to the code and hardware that produced it."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("keras", "tensorflow", "jax", "jaxlib", "torch", "numpy", "mlflow", "optuna", "dvc")


def git_state() -> dict[str, str | bool]:
    """HEAD and the dirty flag. A tree copied to another machine (a GPU box) may carry a stale
    .git: there the BENCH_COMMIT / BENCH_DIRTY variables the sender set take precedence."""
    if "BENCH_COMMIT" in os.environ:
        dirty = os.environ.get("BENCH_DIRTY", "unknown") != "false"
        return {"commit": os.environ["BENCH_COMMIT"], "dirty": dirty}
    try:
        commit = _git("rev-parse", "HEAD")
        # Results files are tracked: a benchmark's own output must not mark the next run dirty.
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no", "--", ":!bench/results"))
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": True}
    return {"commit": commit, "dirty": dirty}


def versions() -> dict[str, str]:
    found = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def machine(accelerator: str | None = None) -> str:
    cpu = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return f"{accelerator}; {cpu}" if accelerator else cpu


def record(accelerator: str | None = None) -> dict[str, object]:
    return {
        **git_state(),
        "python": platform.python_version(),
        "versions": versions(),
        "machine": machine(accelerator),
    }


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
