"""Benchmark: what MLflow tracking adds to the train stage's wall time.

    uv run python bench/bench_tracking.py [--epochs 3] [--repeats 2]

Runs in-process, alternating untracked and tracked runs (the same data, params and seed;
`--epochs` shortens training, which makes the overhead look *larger*, not smaller). Tracked is
the train stage's own code, `train.train`, into a fresh sqlite store in a temp dir; untracked is
the same fit and saved outputs without it. Reports the median wall time of each (A/B: noisy on a
shared machine) and, steadier, the seconds spent inside the stage's calls into tracking/ (and
the data digest its lineage needs) over the untracked time.
Writes bench/results/tracking.json.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from common import bootstrap

bootstrap.start(__name__)  # first: quiets the libraries below as they load

import provenance
import train
from ml import config, data, runtime, training
from tracking import lineage, logs, pipeline_run, store

RESULTS = Path(__file__).resolve().parent / "results" / "tracking.json"


def untracked(params: config.Params, out: Path, device: runtime.Device) -> None:
    splits, scaling = training.load_inputs()
    fitted = training.fit(splits, params.train, params.seed, scaling, device, verbose=0)
    train.save_outputs(fitted, out / "model.keras", out)


class Stopwatch:
    """Accumulates the seconds spent inside the calls it times."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self, fn, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


class Timed:
    """A module as train.py sees it, with every call into it timed: a context manager it returns
    is timed on entry and exit, and the epoch callback on each epoch's end."""

    def __init__(self, module: ModuleType, watch: Stopwatch, names: set[str] | None = None):
        self.module, self.watch, self.names = module, watch, names

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.module, name)
        if not callable(target) or (self.names is not None and name not in self.names):
            return target
        if target is logs.EpochMetrics:
            return functools.partial(TimedEpochMetrics, self.watch)
        return functools.partial(self.call, target)

    def call(self, fn, *args, **kwargs):
        result = self.watch(fn, *args, **kwargs)
        if isinstance(result, contextlib.AbstractContextManager):
            return TimedContext(result, self.watch)
        return result


class TimedContext:
    def __init__(self, inner: contextlib.AbstractContextManager, watch: Stopwatch) -> None:
        self.inner, self.watch = inner, watch

    def __enter__(self) -> Any:
        return self.watch(self.inner.__enter__)

    def __exit__(self, *exc: object) -> bool | None:
        return self.watch(self.inner.__exit__, *exc)


class TimedEpochMetrics(logs.EpochMetrics):
    def __init__(self, watch: Stopwatch) -> None:
        super().__init__()
        self.watch = watch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.watch(super().on_epoch_end, epoch, logs)


def tracked(params: config.Params, out: Path, device: runtime.Device) -> float:
    """The train stage's own code; returns the seconds spent inside its tracking calls."""
    watch = Stopwatch()
    timed = {
        "lineage": Timed(lineage, watch),
        "logs": Timed(logs, watch),
        "pipeline_run": Timed(pipeline_run, watch),
        "store": Timed(store, watch),
        "data": Timed(data, watch, names={"digest_dir"}),
    }
    # The stage's own lines go to stderr, off the results.
    with mock.patch.multiple(train, **timed), contextlib.redirect_stdout(sys.stderr):
        train.train(params, out / "model.keras", out)
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
    provenance.save(RESULTS, results)


if __name__ == "__main__":
    bootstrap.run(main)
