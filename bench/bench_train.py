"""Benchmark: our default CNN vs the seed scripts' recipes, on this machine, in one run.

    uv run python bench/bench_train.py            # everything (about 15 min on 2 cores)
    uv run python bench/bench_train.py --part speed --part seeds

Needs the preprocess stage's output (run `dvc repro preprocess` first). Reports, as JSON in
bench/results/train.json and on stdout:
  ours   our default params (params.yaml) and the previous default (params.yaml at --baseline),
         alternated over seeds 0, 1, 2: test accuracy (final and after epoch 1), training time
         and its ratio (medians), and the training's GFLOP/s against this machine's ceiling and
         paper peak (ceiling.py);
  speed  time to >=99.0% test accuracy, median of seeds 0, 1, 2 each side: preset seed_a trained
         exactly as the seed scripts do (plain model.fit, batch 32, Adam 1e-3, up to 10 epochs,
         stopped once it reaches 99%) against our default (the ours part's runs);
  seeds  each seed preset trained with its published recipe, next to its published accuracy;
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
from common.errors import PipelineError
from ml import config, data, model, runtime, training

RESULTS = Path(__file__).resolve().parent / "results" / "train.json"
TARGET = 0.99
SEEDS = (0, 1, 2)
# The recipe a new default must beat: params.yaml at this commit, the last with the 12-epoch
# Conv32-Conv48-Dense128 default (a recipe equal to today's is trained once: side_by_side).
BASELINE = "dd63dde"

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
        self.saved_accuracy: float | None = None  # set by our_run, after training

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.elapsed, self._start = 0.0, time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.elapsed += time.perf_counter() - self._start
        probs = self.model.predict(self.x, batch_size=1024, verbose=0)
        self.points.append((round(self.elapsed, 2), float((probs.argmax(1) == self.y).mean())))
        self._start = time.perf_counter()

    def time_to(self, target: float) -> float | None:
        return next((t for t, acc in self.points if acc >= target), None)

    @property
    def seconds(self) -> float:
        return self.points[-1][0]

    @property
    def accuracy(self) -> float:
        return self.points[-1][1]


class StopAt(TestClock):
    """A TestClock that ends training once test accuracy reaches the target: the time to it is
    all the speed part needs from the slow baseline."""

    def __init__(self, test: data.Split, target: float) -> None:
        super().__init__(test)
        self.target = target

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        self.model.stop_training = self.accuracy >= self.target


def seed_script_a(splits: data.Splits, test: data.Split, seed: int) -> TestClock:
    """Preset seed_a as the seed scripts train it: numpy arrays, batch 32, Adam, 10 epochs."""
    print(f"training seed_a as the seed scripts do (seed {seed}) ...", flush=True)
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")  # Keras' default, which the seeds ran in
    keras.utils.set_random_seed(seed)
    cnn = model.build_cnn(model.PRESETS["seed_a"])  # its Rescaling(1/255) is the seeds' x / 255
    cnn.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    clock = StopAt(test, TARGET)
    cnn.fit(splits.train.x, splits.train.y, batch_size=32, epochs=10, callbacks=[clock], verbose=0)
    return clock


def our_run(splits, test, scaling, params: config.TrainParams, seed: int, device, label: str):
    print(f"training {label} (seed {seed}) ...", flush=True)
    keras.backend.clear_session()
    runtime.use_precision(params.precision, on_gpu=device.kind == "GPU")
    clock = TestClock(test)
    fitted = training.fit(splits, params, seed, scaling, device, callbacks=[clock], verbose=0)
    clock.saved_accuracy = saved_accuracy(fitted.model, test)
    return clock


def saved_accuracy(cnn: keras.Model, test: data.Split) -> float:
    """Test accuracy of the model as the train stage saves it, which evaluate scores: float32
    (ml.model.save), where the clock's epochs ran in the training's precision."""
    with model.served_copy(cnn) as (served, _):
        probs = served.predict(test.x, batch_size=1024, verbose=0)
    return float((probs.argmax(1) == test.y).mean())


def baseline_params(commit: str) -> config.TrainParams:
    """The train section of params.yaml as it was at `commit`."""
    shown = subprocess.run(
        ["git", "show", f"{commit}:params.yaml"], cwd=paths.ROOT, capture_output=True, text=True
    )
    if shown.returncode != 0:
        raise PipelineError(f"--baseline {commit}: no params.yaml at that commit; give a commit")
    text = shown.stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(text)
        train = config.load(path).train
    # `auto` meant float32 on CPU at every baseline commit; today it may mean bfloat16 compute
    # (ml.runtime), which would speed the baseline up with the new runtime, not its own.
    return train.model_copy(update={"precision": "float32"}) if train.precision == "auto" else train


def side_by_side(run, ours: config.TrainParams, baseline: config.TrainParams) -> dict:
    """Both recipes on every seed, alternated so that a slow stretch of the machine falls on
    both, and their figures: accuracies per seed, times per seed and the ratio of the medians."""
    if ours == baseline:  # nothing to compare: train it once per seed, not twice
        clocks = [run(ours, seed, "our default (the baseline's recipe too)") for seed in SEEDS]
        return {"ours": recipe_figures(clocks), "baseline": "the same recipe"}, {"ours": clocks}
    clocks = {"ours": [], "baseline": []}
    for seed in SEEDS:
        clocks["baseline"].append(run(baseline, seed, "the previous default"))
        clocks["ours"].append(run(ours, seed, "our default"))
    summary = {side: recipe_figures(runs) for side, runs in clocks.items()}
    ratio = summary["ours"]["train_seconds_median"] / summary["baseline"]["train_seconds_median"]
    return {**summary, "train_time_ratio": round(ratio, 3)}, clocks


def recipe_figures(clocks: list[TestClock]) -> dict:
    accs = [clock.saved_accuracy for clock in clocks]
    seconds = [clock.seconds for clock in clocks]
    return {
        "test_accuracy": accs,
        "mean": round(statistics.mean(accs), 5),
        "std": round(statistics.stdev(accs), 5),
        "epoch_1_accuracy": [clock.points[0][1] for clock in clocks],
        "train_seconds": seconds,
        "train_seconds_median": statistics.median(seconds),
        "curves": [clock.points for clock in clocks],
    }


def median_time_to_target(clocks: list[TestClock]) -> float | None:
    """The median seed's time to the target; None unless every seed reached it (a seed that
    never does has no time to rank)."""
    times = [clock.time_to(TARGET) for clock in clocks]
    return None if None in times else statistics.median(times)


def training_compute(params: config.TrainParams, images: int, seconds: float) -> dict:
    """The training's achieved GFLOP/s (images seen x the 3x-forward estimate per image) beside
    the peaks of this machine, the ceiling measured now, in this process."""
    flops = ceiling.training_flops(model.build_cnn(model.architecture(params)))
    peak = ceiling.measured_gflops()
    precision = runtime.resolve_precision(params.precision, on_gpu=False)
    # Under bfloat16 compute the fp32 ceiling understates what the machine can do: the bfloat16
    # multiply (what a mixed_bfloat16 layer's matmuls run in) is measured too.
    achieved = images * params.epochs / seconds
    figures = {
        "precision": precision,
        "training_mflop_per_image": round(flops / 1e6, 2),
        "measured_ceiling_gflops": round(peak, 1),
        "paper_peak": ceiling.paper_gflops(),
        **ceiling.report(achieved, flops, peak),
    }
    if "bfloat16" in precision:
        bf16_peak = ceiling.measured_gflops("bfloat16")
        figures["measured_bfloat16_ceiling_gflops"] = round(bf16_peak, 1)
        figures["of_measured_bfloat16_ceiling"] = round(achieved * flops / 1e9 / bf16_peak, 3)
    return figures


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
            "augment": config.Augment(),  # the seed scripts train on the images as they are
            "precision": "float32",  # and in Keras' default numerics
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
    parser.add_argument("--part", action="append", choices=["ours", "speed", "seeds", "repro"])
    parser.add_argument("--baseline", default=BASELINE, help="commit of the previous default")
    args = parser.parse_args()
    parts = set(args.part or ["ours", "speed", "seeds", "repro"])
    params = config.load()
    splits, scaling = training.load_inputs()
    test = data.load_split(paths.PROCESSED_DIR / "test.npz")
    device = runtime.configure()

    def run(train: config.TrainParams, seed: int, label: str) -> TestClock:
        return our_run(splits, test, scaling, train, seed, device, label)

    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results |= provenance.record()  # this run's, over an earlier part's: see "measured_at"
    # Per part run now, where it ran; the parts not run now keep theirs.
    results.setdefault("measured_at", {}).update(dict.fromkeys(parts, provenance.record()))
    if "ours" in parts or "speed" in parts:
        baseline = baseline_params(args.baseline)
        results["ours"], clocks = side_by_side(run, params.train, baseline)
        results["ours"]["baseline_commit"] = args.baseline
        seconds = results["ours"]["ours"]["train_seconds_median"]
        results["ours"]["compute"] = training_compute(params.train, len(splits.train), seconds)
    if "speed" in parts:
        seed_a = [seed_script_a(splits, test, seed) for seed in SEEDS]
        t_base, t_ours = median_time_to_target(seed_a), median_time_to_target(clocks["ours"])
        results["speed"] = {
            "seed_a_curves": [clock.points for clock in seed_a],
            "seed_a_seconds_to_99": [clock.time_to(TARGET) for clock in seed_a],
            "ours_seconds_to_99": [clock.time_to(TARGET) for clock in clocks["ours"]],
            "speedup_median_seed": round(t_base / t_ours, 2) if t_base and t_ours else None,
        }
    if "seeds" in parts:
        results["seeds"] = {}
        for preset, (*_, published) in SEED_RECIPES.items():
            clock = run(recipe(preset, params.train), 0, preset)
            results["seeds"][preset] = {
                "test_accuracy": clock.accuracy,
                "published": published,
                "seconds": clock.seconds,
            }
    if "repro" in parts:
        results["repro_seconds"] = repro_seconds()
    provenance.save(RESULTS, results)


if __name__ == "__main__":
    bootstrap.run(main)  # a bad --baseline is one line, not a traceback
