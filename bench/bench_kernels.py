"""Benchmark: TensorFlow's CPU kernels, oneDNN's against its own (Eigen), side by side.

    uv run python bench/bench_kernels.py [--repeats 3] [--epochs 1]

TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when it loads, so each arm runs in a child process
(this script with --arm), the arms taking turns. A child times the ops of the default model's
first block alone (batch 128), then trains params.yaml's recipe for --epochs epochs on seed 0,
reports each epoch's seconds and the validation accuracy at the end, and runs the 10,000 test
images through the saved model as it is served (chunks of served_model.CHUNK, best of 3 passes).
Writes every repeat, with commit and machine, to bench/results/kernels.json. Needs `dvc repro
preprocess`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from common import bootstrap

bootstrap.start(__name__)  # first: quiets the libraries below as they load

import provenance
from common.errors import PipelineError

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "kernels.json"
ARMS = {"oneDNN": "1", "Eigen": "0"}  # arm -> TF_ENABLE_ONEDNN_OPTS
BATCH = 128
OP_REPEATS = 30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="children per arm (default 3)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs each child trains")
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # a child's own arm
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(child(args.arm, args.epochs)))
        return
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for repeat in range(args.repeats):
        for arm in ARMS:
            runs[arm].append(spawn(arm, args.epochs))
            print(f"repeat {repeat + 1}, {arm}: {summary(runs[arm][-1])}", flush=True)
    results = {
        "measured": f"params.yaml's recipe, {args.epochs} epoch(s) on seed 0, the test images "
        f"through its saved model, and its first block's ops at batch {BATCH}, under each of "
        "TensorFlow's CPU kernels",
        "epoch_seconds_ratio_eigen_over_onednn": ratio(runs, "epoch_seconds"),
        "served_rate_ratio_onednn_over_eigen": round(1 / ratio(runs, "served_images_per_s"), 2),
        "runs": runs,
        **provenance.record(),
    }
    provenance.save(RESULTS, results)


def spawn(arm: str, epochs: int) -> dict:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": ARMS[arm]}
    command = [sys.executable, __file__, "--arm", arm, "--epochs", str(epochs)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise PipelineError(f"the {arm} arm failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(arm: str, epochs: int) -> dict:
    import keras

    from common import paths
    from ml import config, data, model, runtime, training

    device = runtime.configure()
    if device.kernels != arm:
        raise PipelineError(f"asked for {arm} kernels, TensorFlow runs {device.kernels}")
    ops = op_milliseconds()
    params = config.load(overrides=[f"train.epochs={epochs}"])
    splits, scaling = training.load_inputs()
    keras.backend.clear_session()
    fitted = training.fit(splits, params.train, 0, scaling, device, verbose=0)
    test = data.load_split(paths.PROCESSED_DIR / "test.npz")
    with model.served_copy(fitted.model) as (served, _):
        served_rate = images_per_second(served, test.x)
    return {
        "ops_ms": ops,
        "epoch_seconds": [round(float(s), 1) for s in fitted.history["seconds"]],
        "val_accuracy": round(float(fitted.history["val_accuracy"].iloc[-1]), 4),
        "served_images_per_s": served_rate,
    }


def images_per_second(served: Any, images: Any, passes: int = 3) -> int:
    """The best of `passes` runs over `images`, in the chunks the served model uses."""
    from tracking.served_model import CHUNK

    def one_pass() -> float:
        start = time.perf_counter()
        for first in range(0, len(images), CHUNK):
            served.predict_on_batch(images[first : first + CHUNK])
        return time.perf_counter() - start

    one_pass()  # traced and warm
    return round(len(images) / min(one_pass() for _ in range(passes)))


def op_milliseconds() -> dict[str, float]:
    """The first block's ops on their own, forward and backward (5x5 conv over one channel, 64
    filters, ReLU, 2x2 max pool): where the two kernel sets differ most."""
    import numpy as np
    import tensorflow as tf

    # From numpy: under op determinism (runtime.configure) TensorFlow's random ops need a seed.
    draw = np.random.default_rng(0).standard_normal
    images = tf.constant(draw((BATCH, 28, 28, 1), dtype=np.float32))
    kernel = tf.constant(draw((5, 5, 1, 64), dtype=np.float32))
    conv = tf.constant(draw((BATCH, 24, 24, 64), dtype=np.float32))
    upstream = tf.constant(draw((BATCH, 12, 12, 64), dtype=np.float32))  # the pool's gradient
    ops: dict[str, Callable[[], tf.Tensor]] = {
        "conv forward": lambda: tf.nn.conv2d(images, kernel, 1, "VALID"),
        "conv kernel gradient": lambda: tf.raw_ops.Conv2DBackpropFilter(
            input=images,
            filter_sizes=[5, 5, 1, 64],
            out_backprop=conv,
            strides=[1] * 4,
            padding="VALID",
        ),
        "relu gradient": lambda: tf.raw_ops.ReluGrad(gradients=conv, features=conv),
        # One graph, as in a train step: oneDNN's gradient reuses what its forward recorded.
        "max pool forward + gradient": lambda: pool_and_gradient(conv, upstream),
    }
    return {name: time_op(tf.function(op)) for name, op in ops.items()}


def pool_and_gradient(conv: Any, upstream: Any) -> Any:
    """The 2x2 max pool's input gradient, traced with its forward (tensors in, tensor out)."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(conv)
        pooled = tf.nn.max_pool2d(conv, 2, 2, "VALID")
    return tape.gradient(pooled, conv, output_gradients=upstream)


def time_op(op: Callable) -> float:
    op().numpy()  # traced and warm
    start = time.perf_counter()
    for _ in range(OP_REPEATS):
        result = op()
    result.numpy()
    return round((time.perf_counter() - start) / OP_REPEATS * 1000, 2)


def summary(run: dict) -> str:
    ops = ", ".join(f"{name} {ms} ms" for name, ms in run["ops_ms"].items())
    return (
        f"epochs {run['epoch_seconds']} s, val_accuracy {run['val_accuracy']}, "
        f"{run['served_images_per_s']} images/s served; {ops}"
    )


def ratio(runs: dict[str, list[dict]], key: str) -> float:
    """Eigen's median over oneDNN's, of the per-run totals (a list's sum)."""

    def total(value: float | list[float]) -> float:
        return sum(value) if isinstance(value, list) else value

    totals = {
        arm: statistics.median(total(run[key]) for run in arm_runs)
        for arm, arm_runs in runs.items()
    }
    return round(totals["Eigen"] / totals["oneDNN"], 2)


if __name__ == "__main__":
    bootstrap.run(main)
