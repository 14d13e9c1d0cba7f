"""The benchmarks in bench/ stay runnable: nothing in CI runs most of them (each takes minutes to
an hour), so a name one of them imports from src/ or from another benchmark can go away unseen.
68cd771 dropped bench_serving.best_of, and bench_runtimes failed at import until 4a99083."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO

BENCH = REPO / "bench"

# Imports every script in one process (TensorFlow loads once) and names each that fails.
IMPORT_ALL = """
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc(limit=1).strip().splitlines()[-1])
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_benchmark_imports():
    scripts = sorted(path.stem for path in BENCH.glob("*.py"))
    assert "bench_runtimes" in scripts and len(scripts) > 10  # the glob found the benchmarks
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, *scripts],
        cwd=BENCH,
        env={**os.environ, "PYTHONPATH": f"{BENCH}:{REPO / 'src'}"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"benchmarks that fail at import:\n{done.stdout}{done.stderr}"
