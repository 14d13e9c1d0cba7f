"""Benchmark: the default recipe on this machine's accelerator, for the Keras backend in force.

    KERAS_BACKEND=jax python bench/bench_gpu.py --mnist ../shared/mnist
    KERAS_BACKEND=jax python bench/bench_gpu.py --mnist DIR --arm float32:1:128 --arm auto:auto:128
    python bench/bench_gpu.py --mnist DIR --train-images 1000 -S train.epochs=1   # a smoke run

It needs only keras, its backend, numpy, pandas, pydantic, pyyaml, scikit-learn and src/ (no
MLflow, no DVC, no TensorFlow unless that is the backend), so it runs on a bare GPU box
(../shared/GPU.md). It reads the four MNIST .gz files from --mnist, carves the validation split as
the preprocess stage does, and trains params.yaml's recipe once per arm. An arm is
PRECISION:STEPS_PER_EXECUTION:BATCH_SIZE, where `auto` takes what runtime.configure picks.
Per arm it reports: compile seconds (epoch 1 minus a later epoch), seconds per epoch after it,
training seconds to >= 99% test accuracy counted from the start of fit (compile included, the
per-epoch test prediction excluded), final test accuracy, and images/s in training and predict.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
import typing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from common import bootstrap

bootstrap.start(__name__)  # first: quiets the libraries below as they load

import keras

import provenance
from bench_train import TestClock
from ml import config, data, runtime, training

TARGETS = {"seconds_per_epoch": 0.5, "test_accuracy": 0.994, "seconds_to_99": 12.0}


@dataclasses.dataclass(frozen=True)
class Arm:
    precision: str
    steps_per_execution: int | None  # None: the runtime's choice
    batch_size: int | None  # None: params.yaml's

    @classmethod
    def parse(cls, text: str) -> Arm:
        try:
            precision, steps, batch = text.split(":")
            if precision not in typing.get_args(config.Precision):
                raise ValueError(precision)
            return cls(precision, _int_or_auto(steps), _int_or_auto(batch))
        except ValueError as err:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not PRECISION:STEPS:BATCH, e.g. float32:32:128 or auto:auto:auto"
            ) from err


def _int_or_auto(text: str) -> int | None:
    return None if text == "auto" else int(text)


def load_mnist(
    directory: Path, params: config.Params, train_images: int | None
) -> tuple[data.Splits, data.Split, dict[str, float]]:
    """The preprocess stage's splits, straight from the .gz files."""
    full = data.read_pair(directory, "train")
    splits = data.carve_validation(full, params.preprocess.val_size, params.seed)
    if train_images:
        train = data.Split(splits.train.x[:train_images], splits.train.y[:train_images])
        splits = data.Splits(train=train, val=splits.val)
    scaling = data.scaling(splits.train, params.preprocess.scale)
    return splits, data.read_pair(directory, "t10k"), scaling


def run_arm(
    arm: Arm,
    params: config.Params,
    splits: data.Splits,
    test: data.Split,
    scaling: dict[str, float],
) -> dict[str, object]:
    keras.backend.clear_session()
    device = runtime.configure(arm.precision)
    if arm.steps_per_execution is not None:
        device = dataclasses.replace(device, steps_per_execution=arm.steps_per_execution)
    recipe = params.train
    if arm.batch_size is not None:
        recipe = recipe.model_copy(update={"batch_size": arm.batch_size})
    print(f"arm {arm}: {device.describe()}, {device.steps_per_execution} steps/call", flush=True)
    clock = TestClock(test)
    fitted = training.fit(splits, recipe, params.seed, scaling, device, [clock], verbose=0)
    seconds = fitted.history["seconds"].tolist()
    later = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    _, test_accuracy = fitted.model.evaluate(test.x, test.y, batch_size=1024, verbose=0)
    return {
        "arm": dataclasses.asdict(arm),
        "device": device.describe(),
        "steps_per_execution": device.steps_per_execution,
        "batch_size": recipe.batch_size,
        "epochs": len(seconds),
        "compile_seconds": round(seconds[0] - later, 2),
        "seconds_per_epoch": round(later, 3),
        "epoch_seconds": [round(s, 3) for s in seconds],
        "seconds_to_99": clock.time_to(0.99),
        "test_accuracy": round(float(test_accuracy), 4),
        "test_curve": clock.points,
        "train_images_per_s": round(len(splits.train) / later),
        "predict_images_per_s": predict_rate(fitted.model, test),
    }


def predict_rate(model: keras.Model, test: data.Split) -> int:
    """Images/s of model.predict over the test set, after one warm-up call."""
    model.predict(test.x[:2048], batch_size=1024, verbose=0)
    start = time.perf_counter()
    model.predict(test.x, batch_size=1024, verbose=0)
    return round(len(test) / (time.perf_counter() - start))


def accelerator(backend: str) -> str | None:
    """The GPU's name, for the results file."""
    if backend == "jax":
        import jax

        gpus = [d.device_kind for d in jax.devices() if d.platform == "gpu"]
    elif backend == "torch":
        import torch

        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    else:
        import tensorflow as tf

        gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return f"{len(gpus)}x {gpus[0]}" if gpus else None


def meets(result: dict[str, object]) -> dict[str, bool]:
    reached = result["seconds_to_99"]
    return {
        "seconds_per_epoch": result["seconds_per_epoch"] <= TARGETS["seconds_per_epoch"],
        "test_accuracy": result["test_accuracy"] >= TARGETS["test_accuracy"],
        "seconds_to_99": reached is not None and reached <= TARGETS["seconds_to_99"],
    }


def summary_line(r: dict[str, object]) -> str:
    return (
        f"{r['device']} x{r['steps_per_execution']} b{r['batch_size']}: "
        f"compile {r['compile_seconds']:.1f} s, {r['seconds_per_epoch']:.3f} s/epoch, "
        f"99% at {r['seconds_to_99']} s, test {r['test_accuracy']:.4f}, "
        f"predict {r['predict_images_per_s']}/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mnist", type=Path, required=True, help="folder of the four .gz files")
    parser.add_argument("--arm", action="append", type=Arm.parse, help="PRECISION:STEPS:BATCH")
    parser.add_argument(
        "-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="override params"
    )
    parser.add_argument("--train-images", type=int, help="train on the first N only (smoke runs)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results/gpu.json")
    args = parser.parse_args()
    params = config.load(overrides=args.set)
    splits, test, scaling = load_mnist(args.mnist, params, args.train_images)
    backend = keras.backend.backend()
    report = {
        **provenance.record(accelerator(backend)),
        "command": " ".join(["bench/bench_gpu.py", *sys.argv[1:]]),
        "backend": backend,
        "train_images": len(splits.train),
        "targets": TARGETS,
        "arms": [],
    }
    for arm in args.arm or [Arm("auto", None, None)]:
        result = run_arm(arm, params, splits, test, scaling)
        report["arms"].append(result | {"meets_targets": meets(result)})
        # After every arm: a run cut short by a time limit still leaves what it measured.
        args.out.parent.mkdir(parents=True, exist_ok=True)
        provenance.save(args.out, report, echo=False)
        print(summary_line(result), flush=True)


if __name__ == "__main__":
    bootstrap.run(main)
