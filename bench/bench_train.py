"""Benchmark: our default CNN vs the seed scripts' recipes, on this machine, in one run.

    uv run python bench/bench_train.py            # everything (about 15 min on 2 cores)
    uv run python bench/bench_train.py --part speed --part seeds

Needs the preprocess stage's output (run `dvc repro preprocess` first). Reports, as JSON in
bench/results/train.json and as a table on stdout:
  speed  time to >=99.0% test accuracy: preset seed_a trained exactly as the seed scripts do
         (plain model.fit on float arrays, batch 32, Adam 1e-3, 10 epochs) vs our default params
         over seeds 0, 1, 2; the speed-up uses the median seed;
  seeds  each seed preset trained with its published recipe, next to its published accuracy;
  ours   our default params over 3 seeds: test accuracy mean and std, and the training's
         GFLOP/s against this machine's ceiling and paper peak (ceiling.py);
  repro  wall time of the whole `dvc repro` from an empty data/ (local mirror) in a fresh copy.
Test accuracy is read after each epoch for the time-to-target only; training time excludes it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from common import bootstrap

bootstrap.start(__name__)  # first: quiets the libraries below as they load

import keras

import ceiling
import provenance
from common import paths
from ml import config, data, model, runtime, training

RESULTS = Path(__file__).resolve().parent / "results" / "train.json"
TARGET = 0.99

# The seed documents' recipes: (optimizer, learning rate, batch size, epochs, published accuracy).
SEED_RECIPES = {
    "seed_a": ("adam", 1e-3, 32, 10, None),  # CSDN posts: no test accuracy published
    "seed_b": ("adam", 1e-3, 64, 10, 0.9869),  # PyTorch post
    "seed_c": ("rmsprop", 1e-3, 64, 5, 0.991),  # Chollet, DLwP ch. 8
    "seed_d": ("adam", 1e-3, 64, 5, 0.9886),  # TF textbook chapter
}


class TestClock(keras.callbacks.Callback):
    """Training seconds (test evaluation excluded) and test accuracy at the end of each epoch."""

    def __init__(self, test: data.Split) -> None:
        super().__init__()
        self.x, self.y = test.x, test.y
        self.points: list[tuple[float, float]] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.elapsed, self._start = 0.0, time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.elapsed += time.perf_counter() - self._start
        probs = self.model.predict(self.x, batch_size=1024, verbose=0)
        self.points.append((round(self.elapsed, 2), float((probs.argmax(1) == self.y).mean())))
        self._start = time.perf_counter()

    def time_to(self, target: float) -> float | None:
        return next((t for t, acc in self.points if acc >= target), None)


def seed_script_a(splits: data.Splits, test: data.Split) -> TestClock:
    """Preset seed_a as the seed scripts train it: numpy arrays, batch 32, Adam, 10 epochs."""
    print("training seed_a as the seed scripts do ...", flush=True)
    keras.utils.set_random_seed(0)
    cnn = model.build_cnn(model.PRESETS["seed_a"])  # its Rescaling(1/255) is the seeds' x / 255
    cnn.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    clock = TestClock(test)
    cnn.fit(splits.train.x, splits.train.y, batch_size=32, epochs=10, callbacks=[clock], verbose=0)
    return clock


def our_run(splits, test, scaling, params: config.TrainParams, seed: int, device) -> TestClock:
    print(f"training {params.preset or 'our default'} (seed {seed}) ...", flush=True)
    keras.backend.clear_session()
    clock = TestClock(test)
    training.fit(splits, params, seed, scaling, device, callbacks=[clock], verbose=0)
    return clock


def training_compute(params: config.TrainParams, images: int, seconds: float) -> dict:
    """The training's achieved GFLOP/s (images seen x the 3x-forward estimate per image) beside
    the peaks of this machine, the ceiling measured now, in this process."""
    flops = ceiling.training_flops(model.build_cnn(model.architecture(params)))
    peak = ceiling.measured_gflops()
    return {
        "training_mflop_per_image": round(flops / 1e6, 2),
        "measured_ceiling_gflops": round(peak, 1),
        "paper_peak": ceiling.paper_gflops(),
        **ceiling.report(images * params.epochs / seconds, flops, peak),
    }


def recipe(preset: str, base: config.TrainParams) -> config.TrainParams:
    opt, lr, batch, epochs, _ = SEED_RECIPES[preset]
    return base.model_copy(
        update={
            "preset": preset,
            "optimizer": opt,
            "learning_rate": lr,
            "lr_schedule": "constant",
            "warmup_epochs": 0,
            "ema_momentum": None,
            "batch_size": batch,
            "epochs": epochs,
        }
    )


def repro_seconds() -> float:
    """Time `dvc repro` in a fresh clone of HEAD: empty data/, local mirror, as a new user."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["git", "clone", "-q", str(paths.ROOT), tmp], check=True)
        env = {**os.environ, "MNIST_MIRROR": str(paths.ROOT.parent / "shared" / "mnist")}
        start = time.perf_counter()
        subprocess.run(["dvc", "repro"], cwd=tmp, env=env, check=True, capture_output=True)
        return round(time.perf_counter() - start, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", action="append", choices=["speed", "seeds", "ours", "repro"])
    parts = set(parser.parse_args().part or ["speed", "seeds", "ours", "repro"])
    params = config.load()
    splits, scaling = training.load_inputs()
    test = data.load_split(paths.PROCESSED_DIR / "test.npz")
    device = runtime.configure()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results |= provenance.record()  # this run's, over an earlier part's: see "measured_at"
    # Per part run now, where it ran; the parts not run now keep theirs.
    results.setdefault("measured_at", {}).update(dict.fromkeys(parts, provenance.record()))
    if "speed" in parts or "ours" in parts:
        ours = [our_run(splits, test, scaling, params.train, seed, device) for seed in (0, 1, 2)]
        accs = [clock.points[-1][1] for clock in ours]
        results["ours"] = {
            "test_accuracy": accs,
            "mean": statistics.mean(accs),
            "std": statistics.stdev(accs),
            "train_seconds": ours[0].points[-1][0],
            "compute": training_compute(params.train, len(splits.train), ours[0].points[-1][0]),
        }
    if "speed" in parts:
        baseline = seed_script_a(splits, test)
        t_base = baseline.time_to(TARGET)
        t_ours = [clock.time_to(TARGET) for clock in ours]  # seeds 0, 1, 2
        reached = sorted(t for t in t_ours if t is not None)
        t_median = reached[1] if len(reached) == 3 else None
        results["speed"] = {
            "seed_a_curve": baseline.points,
            "ours_curves": [clock.points for clock in ours],
            "seed_a_seconds_to_99": t_base,
            "ours_seconds_to_99": t_ours,
            "speedup_median_seed": round(t_base / t_median, 2) if t_base and t_median else None,
        }
    if "seeds" in parts:
        results["seeds"] = {}
        for preset, (*_, published) in SEED_RECIPES.items():
            clock = our_run(splits, test, scaling, recipe(preset, params.train), 0, device)
            results["seeds"][preset] = {
                "test_accuracy": clock.points[-1][1],
                "published": published,
                "seconds": clock.points[-1][0],
            }
    if "repro" in parts:
        results["repro_seconds"] = repro_seconds()
    provenance.save(RESULTS, results)


if __name__ == "__main__":
    main()
