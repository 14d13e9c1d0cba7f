"""Benchmark: what MLflow tracking adds to the train stage's wall time.

    uv run python bench/bench_tracking.py [--epochs 3] [--repeats 2]

Runs the train stage's work in-process, alternating untracked and tracked runs (the same data,
params and seed; `--epochs` shortens training, which makes the overhead look *larger*, not
smaller). Tracked = the stage's MLflow calls: open the run with params and lineage tags, log
the datasets and preprocess reports, per-epoch metrics, final metrics and report files; into a
fresh sqlite store in a temp dir. Reports the median wall time of each and the overhead ratio.
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

import runtime  # quiets TensorFlow before it loads

# isort: split

import config
import data
import model
import tracking
import train

RESULTS = Path(__file__).resolve().parent / "results" / "tracking.json"


def untracked(params: config.Params, out: Path, device: runtime.Device) -> None:
    splits, scaling = train.load_inputs(config.PROCESSED_DIR)
    fitted = train.fit(splits, params.train, params.seed, scaling, device, verbose=0)
    train.save_outputs(fitted, out / "model.keras", out)


def tracked(params: config.Params, out: Path, device: runtime.Device) -> None:
    """The same work with the train stage's tracking calls, in the stage's order."""
    splits, scaling = train.load_inputs(config.PROCESSED_DIR)
    arch, _ = model.resolve(params.train.preset, params.train.model)
    digest = data.digest_dir(config.PROCESSED_DIR)
    with tracking.pipeline_run(params, tracking.lineage(params, digest, arch, "CPU")) as run_id:
        train.track_inputs(splits, digest)
        fitted = train.fit(
            splits,
            params.train,
            params.seed,
            scaling,
            device,
            callbacks=[tracking.EpochMetrics()],
            verbose=0,
        )
        train.save_outputs(fitted, out / "model.keras", out)
        tracking.log_metrics(fitted.final(), prefix="final_")
        tracking.log_files([out / "curves.png", out / "history.csv"], "train")
    tracking.save_run_file(run_id, out / "run.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    params = config.load(overrides=[f"train.epochs={args.epochs}"])
    device = runtime.configure()
    times: dict[str, list[float]] = {"untracked": [], "tracked": []}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        for _ in range(args.repeats):
            for name, work in (("untracked", untracked), ("tracked", tracked)):
                start = time.perf_counter()
                work(params, Path(tmp) / name, device)
                times[name].append(round(time.perf_counter() - start, 2))
                print(name, times[name][-1], "s", flush=True)
    off, on = statistics.median(times["untracked"]), statistics.median(times["tracked"])
    results = {"epochs": args.epochs, "seconds": times, "overhead": round(on / off - 1, 4)}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
