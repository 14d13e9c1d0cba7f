"""Benchmark: what a Pareto search buys. A search of accuracy against latency, side by side with
the single-objective search of params.yaml, in one run.

    uv run python bench/bench_pareto.py [--budget-s 1800] [--epochs 3] [--tolerance-pp 0.1]

Each arm gets `--budget-s` seconds (default 1800: one CPU-hour on 2 cores), params.yaml's space
with train.epochs fixed at `--epochs` (so that a search without pruning still sees tens of
trials), TPE seeded identically. The single-objective arm prunes as tune.py does; the Pareto arm
cannot. Reports the front and the fastest trial within `--tolerance-pp` of the single-objective
best's validation accuracy, at what fraction of its latency, weights and size. The two latencies
are measured again here, alternately, on rebuilt models of both architectures (latency depends
on the architecture, not the weights), so that a busy moment during the search biases neither.
Writes bench/results/pareto.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from common import bootstrap

bootstrap.start(__name__)  # first: quiets the libraries below as they load

import optuna

import provenance
from ml import config, data, footprint, model, training
from tracking import store
from tuning import front, objective, pruning, runs
from tuning.pick import Pick
from tuning.progress import SearchProgress, TrialReport

RESULTS = Path(__file__).resolve().parent / "results" / "pareto.json"
OBJECTIVES = ["val_accuracy", "latency_ms"]
ROUNDS = 7  # alternating latency measurements of the two models; the median of each is reported


def arm(
    objectives: list[str], splits: data.Splits, scaling: data.Scaling, epochs: int, budget_s: float
) -> optuna.Study:
    params = config.with_values(config.load(), {"tune.objectives": objectives})
    several = len(objectives) > 1
    study = optuna.create_study(
        directions=params.tune.directions,
        pruner=optuna.pruners.NopPruner() if several else pruning.pruner(params.tune.pruner),
        sampler=optuna.samplers.TPESampler(seed=params.tune.seed),
    )
    parent = runs.study_run("bench-pareto", f"bench-{'-'.join(objectives)}", "memory")
    progress = SearchProgress(n_trials=1000, timeout_s=budget_s)
    fixed = {"train.epochs": epochs}
    trainer = objective.Objective(
        splits, scaling, parent, config.with_values(params, fixed), fixed, progress=progress
    )
    study.optimize(trainer, timeout=budget_s, callbacks=[TrialReport(parent, progress, objectives)])
    return study


def row(trial: optuna.trial.FrozenTrial) -> dict:
    return {"trial": trial.number, **front.measures(trial), "params_searched": trial.params}


def side_by_side(trials: dict[str, optuna.trial.FrozenTrial], image) -> dict[str, float]:
    """Each trial's architecture rebuilt and timed in turn, ROUNDS times; the median of each."""
    built = {}
    for name, trial in trials.items():
        train = config.TrainParams.model_validate(trial.user_attrs["trained_with"]["train"])
        built[name] = model.build_cnn(model.architecture(train))
    times: dict[str, list[float]] = {name: [] for name in built}
    for _ in range(ROUNDS):
        for name, cnn in built.items():
            times[name].append(footprint.latency_ms(cnn, image))
    return {name: round(statistics.median(each), 4) for name, each in times.items()}


def compare(single: optuna.Study, pareto: optuna.Study, tolerance_pp: float, image) -> dict:
    best = front.picked(front.candidates(single), Pick())
    floor = front.accuracy(best) - tolerance_pp / 100 - front.EPSILON
    within = [t for t in front.candidates(pareto) if front.accuracy(t) >= floor]
    fastest = front.picked(within, Pick("fastest", 100.0)) if within else None
    result = {"single_objective_best": row(best), "fastest_within_tolerance": None}
    if fastest is None:
        return result
    result["fastest_within_tolerance"] = row(fastest)
    latency = side_by_side({"best": best, "fastest": fastest}, image)
    costs = {"best": front.measures(best), "fastest": front.measures(fastest)}
    result |= {
        "latency_ms_side_by_side": latency,
        "accuracy_gap_pp": round(100 * (front.accuracy(best) - front.accuracy(fastest)), 3),
        "latency_ratio": round(latency["fastest"] / latency["best"], 3),
        "params_ratio": round(costs["fastest"]["params"] / costs["best"]["params"], 3),
        "size_ratio": round(costs["fastest"]["size_kb"] / costs["best"]["size_kb"], 3),
    }
    result["target_met"] = result["latency_ratio"] <= 1 / 3
    return result


def summary(study: optuna.Study, seconds: float) -> dict:
    states = [t.state.name for t in study.trials]
    return {
        "trials": len(states),
        "complete": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
        "cpu_hours": round(seconds * (os.cpu_count() or 1) / 3600, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-s", type=float, default=1800, help="per arm")
    parser.add_argument("--epochs", type=int, default=3, help="train.epochs of every trial")
    parser.add_argument("--tolerance-pp", type=float, default=0.1)
    args = parser.parse_args()
    splits, scaling = training.load_inputs()
    results = {
        "budget_s_per_arm": args.budget_s,
        "epochs_per_trial": args.epochs,
        "tolerance_pp": args.tolerance_pp,
        "latency": f"one image, median of {footprint.TIMED_CALLS} predict_on_batch calls",
        **provenance.record(),
    }
    studies = {}
    with tempfile.TemporaryDirectory() as tmp:
        store.connect(f"sqlite:///{tmp}/mlflow.db")
        for name, objectives in (("single", OBJECTIVES[:1]), ("pareto", OBJECTIVES)):
            print(f"--- {name}: {', '.join(objectives)}", flush=True)
            start = time.perf_counter()
            studies[name] = arm(objectives, splits, scaling, args.epochs, args.budget_s)
            results[name] = summary(studies[name], time.perf_counter() - start)
    results["front"] = [row(t) for t in front.pareto_front(studies["pareto"])]
    results |= compare(studies["single"], studies["pareto"], args.tolerance_pp, splits.val.x[0])
    provenance.save(RESULTS, results)


if __name__ == "__main__":
    bootstrap.run(main)
