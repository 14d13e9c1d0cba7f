"""Benchmark: does a 1-CPU-hour search give a model that `dvc repro` retrains to >= 99.65% test?

    uv run python bench/bench_tuned.py [--budget-s 1900]   # about 45 min on 2 cores

Run as a user would, in a fresh clone of HEAD with its own MLflow store and study file, MNIST
from $MNIST_MIRROR (else ../shared/mnist): `dvc repro preprocess`; `python src/tune.py --timeout
BUDGET` (one worker; the default space, pruner and seed); `python src/tune.py --apply`;
`dvc repro`. Records the search's CPU time (user + system of the worker and its
children, from getrusage, so the budget is counted in CPU time, not assumed from wall time), its
trials, the best trial, and the retrained model's validation and test accuracy and MD5, beside
the targets of issue 29. Writes bench/results/tuned.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from common import bootstrap

bootstrap.start(__name__)

import optuna

import provenance
from common import paths
from common.errors import PipelineError

RESULTS = Path(__file__).resolve().parent / "results" / "tuned.json"
STUDY = "bench-tuned"
TEST_TARGET = 0.9965
VAL_MATCH_PP = 0.1


def run(clone: Path, *args: str) -> None:
    """One step of the user's sequence, with its output shown as it comes."""
    print(f"--- {' '.join(args)}", flush=True)
    env = {**os.environ, "MNIST_MIRROR": mirror()}
    env.pop("MLFLOW_TRACKING_URI", None)  # the clone's own store, never a team server
    done = subprocess.run(args, cwd=clone, env=env)
    if done.returncode != 0:  # its output, shown above, says why
        raise PipelineError(f"`{' '.join(args)}` failed (exit {done.returncode}): see above")


def mirror() -> str:
    return os.environ.get("MNIST_MIRROR") or str(paths.ROOT.parent / "shared" / "mnist")


def search(clone: Path, budget_s: float) -> dict:
    """Run the tuning worker; return its CPU and wall time."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    tune = [sys.executable, "src/tune.py", "--timeout", str(budget_s), "--n-trials", "1000"]
    run(clone, *tune, "--study", STUDY)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu_hours": round(cpu_s / 3600, 3), "wall_s": round(time.perf_counter() - start)}


def trials(clone: Path) -> dict:
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{clone}/optuna/studies.db")
    states = [t.state.name for t in study.trials]
    return {
        "trials": len(states),
        "complete": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
        "best_trial": study.best_trial.number,
        "best_params": study.best_params,
        "best_val_accuracy": study.best_value,
        # Every trial, so what the pruner stopped and where can be read back, not only counted.
        "each": [
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "last_epoch": max(t.intermediate_values, default=None),
                "params": t.params,
            }
            for t in study.trials
        ],
    }


def retrained(clone: Path, seconds: float) -> dict:
    def metrics(reports: Path) -> dict:
        return json.loads((clone / reports.relative_to(paths.ROOT) / "metrics.json").read_text())

    train_metrics, eval_metrics = metrics(paths.TRAIN_REPORTS), metrics(paths.EVAL_REPORTS)
    return {
        "val_accuracy": train_metrics["val_accuracy"],
        "test_accuracy": eval_metrics["test_accuracy"],
        "model_md5": hashlib.md5((clone / "models" / "model.keras").read_bytes()).hexdigest(),
        "repro_seconds": round(seconds, 1),  # `dvc repro` after --apply: train + evaluate
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # Wall seconds. The worker kept 1.2 of 2 cores busy at 3c94fd9, 1.5 at 3944e8d and 1.6 under
    # oneDNN's kernels at bdc3b03 (1.001 CPU-hours in 2,278 s), and it ends the trial it is in
    # past the timeout, so the budget is set below an hour / 1.6 cores (2,250 s).
    parser.add_argument("--budget-s", type=float, default=1900, help="tune.py --timeout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp)
        subprocess.run(["git", "clone", "-q", str(paths.ROOT), tmp], check=True)
        run(clone, "dvc", "repro", "preprocess")
        result = {**provenance.record(), "budget_s": args.budget_s}
        result["search"] = search(clone, args.budget_s) | trials(clone)
        run(clone, sys.executable, "src/tune.py", "--apply", "--study", STUDY)
        start = time.perf_counter()
        run(clone, "dvc", "repro")
        result["retrained"] = retrained(clone, time.perf_counter() - start)
    gap_pp = 100 * abs(result["retrained"]["val_accuracy"] - result["search"]["best_val_accuracy"])
    result["targets"] = {
        "cpu_hours_at_most_1": result["search"]["cpu_hours"] <= 1,
        "test_at_least_99.65": result["retrained"]["test_accuracy"] >= TEST_TARGET,
        "val_gap_pp": round(gap_pp, 3),
        "val_within_0.1_pp": gap_pp <= VAL_MATCH_PP,
    }
    provenance.save(RESULTS, result)


if __name__ == "__main__":
    bootstrap.run(main)
