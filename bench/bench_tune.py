"""Benchmark: does pruning pay? The same search with a pruner and without one, in one run.

    uv run python bench/bench_tune.py [--pruner NAME]... [--budget-s 1800] [--train-images N]

The pruner is params.yaml's unless `--pruner` names others. Each arm gets `--budget-s` seconds
of tuning (default: one CPU-hour on 2 cores, the tuned-model target's budget) on the first
`--train-images` training images (default: all; the validation split is unchanged), with the
search space of params.yaml and TPE seeded identically. A smaller budget (e.g. `--budget-s 900
--train-images 15000`) is recorded in the results. Reports trials finished per CPU-hour (wall
time x cores) and the best validation accuracy of each arm. Writes bench/results/tune.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from common import bootstrap

bootstrap.start(__name__)  # first: quiets the libraries below as they load

import optuna

import provenance
from ml import config, data, training, tune_params
from tracking import store
from tuning import objective, pruning, runs
from tuning.progress import SearchProgress, TrialReport

RESULTS = Path(__file__).resolve().parent / "results" / "tune.json"
PRUNERS = [name for name in tune_params.PRUNERS if name != "none"]


def arm(pruner: str, splits: data.Splits, scaling: data.Scaling, budget_s: float) -> dict:
    parent = runs.study_run("bench-tune", f"bench-{pruner}", "memory")
    study = optuna.create_study(
        direction="maximize",
        pruner=pruning.pruner(pruner),
        sampler=optuna.samplers.TPESampler(seed=0),
    )
    progress = SearchProgress(n_trials=1000, timeout_s=budget_s)
    trainer = objective.Objective(splits, scaling, parent, config.load(), progress=progress)
    start = time.perf_counter()
    study.optimize(
        trainer, timeout=budget_s, callbacks=[TrialReport(parent, progress, ["val_accuracy"])]
    )
    hours = (time.perf_counter() - start) * (os.cpu_count() or 1) / 3600
    states = [t.state.name for t in study.trials]
    return {
        "trials": len(states),
        "pruned": states.count("PRUNED"),
        "complete": states.count("COMPLETE"),
        "cpu_hours": round(hours, 3),
        "trials_per_cpu_hour": round(len(states) / hours, 1),
        "best_val_accuracy": study.best_value,
        "each": [trial_row(t) for t in study.trials],
    }


def trial_row(trial: optuna.trial.FrozenTrial) -> str:
    """One line per trial, so a result can be explained: which trials ran long, and for how much."""
    seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    epochs = trial.params["train.epochs"]
    return f"{trial.number} {trial.state.name} {trial.last_step}/{epochs} epochs {seconds:.0f} s"


ROW = re.compile(
    r"(?P<number>\d+) (?P<state>\w+) (?P<done>\d+)/(?P<epochs>\d+) epochs (?P<s>\d+) s"
)
STARTUP = 10  # TPESampler's default n_startup_trials: seeded random draws, the same in every arm


def priced_ratio(rows: list[str], none_rows: list[str]) -> float:
    """The arm's trials priced as if none had been pruned, over what they cost: a cross-check of
    the ratio that does not hang on which few trials fit in the none arm's budget. A start-up
    trial the none arm also ran costs what it cost there; any other costs its time scaled to all
    its epochs (high for trials stopped early: the first epoch also builds the graph)."""
    ran = {m["number"]: int(m["s"]) for m in map(ROW.fullmatch, none_rows) if m}
    spent = unpruned = 0.0
    for m in filter(None, map(ROW.fullmatch, rows)):  # a trial that failed before epoch 1: None
        seconds = int(m["s"])
        spent += seconds
        if int(m["number"]) < STARTUP and m["number"] in ran:
            unpruned += ran[m["number"]]
        else:
            unpruned += seconds * int(m["epochs"]) / int(m["done"])
    return round(unpruned / spent, 2)


def derive(results: dict) -> None:
    """Each pruned arm against the none arm of the same run."""
    none = results["none"]
    for name in PRUNERS:
        if name in results:
            ours = results[name]
            ours["ratio"] = round(ours["trials_per_cpu_hour"] / none["trials_per_cpu_hour"], 2)
            ours["priced_ratio"] = priced_ratio(ours["each"], none["each"])
            ours["best_gap_pp"] = round(
                100 * (none["best_val_accuracy"] - ours["best_val_accuracy"]), 3
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-s", type=float, default=1800, help="per arm")
    parser.add_argument("--train-images", type=int, help="the first N (default: all)")
    parser.add_argument(
        "--pruner", action="append", choices=PRUNERS, help="repeatable; default: params.yaml's"
    )
    parser.add_argument(
        "--derive-only", action="store_true", help=f"recompute the ratios in {RESULTS.name} only"
    )
    args = parser.parse_args()
    if args.derive_only:
        write(json.loads(RESULTS.read_text()))
        return
    default = config.load().tune.pruner
    if not args.pruner and default == "none":
        parser.error("params.yaml's tune.pruner is none: name the pruners to measure (--pruner)")
    args.pruner = args.pruner or [default]
    full, scaling = training.load_inputs()
    n = args.train_images or len(full.train.y)
    splits = data.Splits(data.Split(full.train.x[:n], full.train.y[:n]), full.val)
    results = {"budget_s_per_arm": args.budget_s, "train_images": n, **provenance.record()}
    with tempfile.TemporaryDirectory() as tmp:
        store.connect(f"sqlite:///{tmp}/mlflow.db")
        for pruner in [*args.pruner, "none"]:
            print(f"--- pruner: {pruner}", flush=True)
            results[pruner] = arm(pruner, splits, scaling, args.budget_s)
    write(results)


def write(results: dict) -> None:
    derive(results)
    provenance.save(RESULTS, results)


if __name__ == "__main__":
    bootstrap.run(main)
