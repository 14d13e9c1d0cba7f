"""Benchmark: what MLflow tracking adds to the train stage's wall time.

    uv run python bench/bench_tracking.py [--epochs 3] [--repeats 2]

Runs the train stage's work in-process, alternating untracked and tracked runs (the same data,
params and seed; `--epochs` shortens training, which makes the overhead look *larger*, not
smaller). Tracked = the stage's MLflow calls: open the run with params and lineage tags, log
the datasets and preprocess reports, per-epoch metrics, final metrics and report files; into a
fresh sqlite store in a temp dir. Reports the median wall time of each (A/B: noisy on a shared
machine) and, steadier, the seconds spent inside the tracking calls over the untracked time.
Writes bench/results/tracking.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from common import bootstrap

bootstrap.start(__name__)  # first: quiets the libraries below as they load

import provenance
import train
from common import paths
from ml import config, data, model, runtime, training
from tracking import lineage, logs, pipeline_run, store

RESULTS = Path(__file__).resolve().parent / "results" / "tracking.json"


def untracked(params: config.Params, out: Path, device: runtime.Device) -> None:
    splits, scaling = training.load_inputs()
    fitted = training.fit(splits, params.train, params.seed, scaling, device, verbose=0)
    train.save_outputs(fitted, out / "model.keras", out)


class Stopwatch:
    """Accumulates the seconds spent inside tracking calls."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self, fn, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


class TimedEpochMetrics(logs.EpochMetrics):
    def __init__(self, watch: Stopwatch) -> None:
        super().__init__()
        self.watch = watch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.watch(super().on_epoch_end, epoch, logs)


def tracked(params: config.Params, out: Path, device: runtime.Device) -> float:
    """The same work with the train stage's tracking calls, in the stage's order; returns the
    seconds spent inside those calls."""
    watch = Stopwatch()
    splits, scaling = training.load_inputs()
    arch, _ = model.resolve(params.train.preset, params.train.model)
    digest = watch(data.digest_dir, paths.PROCESSED_DIR)
    tags = watch(lineage.lineage, params, digest, arch, "CPU")
    run = pipeline_run.pipeline_run(params, tags)
    run_id = watch(run.__enter__)
    watch(train.track_inputs, splits, digest)
    fitted = training.fit(
        splits,
        params.train,
        params.seed,
        scaling,
        device,
        callbacks=[TimedEpochMetrics(watch)],
        verbose=0,
    )
    train.save_outputs(fitted, out / "model.keras", out)
    watch(logs.log_training_summary, fitted.seconds, fitted.model.count_params())
    watch(logs.log_files, [out / "curves.png", out / "history.csv"], "train")
    watch(run.__exit__, None, None, None)
    watch(pipeline_run.save_run_file, run_id, out / "run.json")
    return watch.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    params = config.load(overrides=[f"train.epochs={args.epochs}"])
    device = runtime.configure()
    times: dict[str, list[float]] = {"untracked": [], "tracked": []}
    inside: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        store.connect(store.tracking_uri())  # the store exists before timing, as in use
        store.experiment_id(params.tracking.experiment)
        for _ in range(args.repeats):
            for name, work in (("untracked", untracked), ("tracked", tracked)):
                start = time.perf_counter()
                spent = work(params, Path(tmp) / name, device)
                times[name].append(round(time.perf_counter() - start, 2))
                if spent is not None:
                    inside.append(round(spent, 3))
                print(name, times[name][-1], "s", flush=True)
    off, on = statistics.median(times["untracked"]), statistics.median(times["tracked"])
    results = {
        "epochs": args.epochs,
        "wall_seconds": times,
        "ab_overhead": round(on / off - 1, 4),
        "seconds_inside_tracking_calls": inside,
        "inside_overhead": round(statistics.median(inside) / off, 4),
        **provenance.record(),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
