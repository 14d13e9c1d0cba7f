"""Stage train: data/processed/{train,val}.npz + params.train -> models/model.keras, reports/train/.

`fit()` is the project's one training loop; the tuner calls it too.
"""

from __future__ import annotations

import runtime  # first: quiets TensorFlow's C++ logging before TensorFlow loads

# isort: split

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import pandas as pd
import tensorflow as tf

import config
import data
import files
import model
import plots
import tracking
from errors import exit_on_error

MODEL_FILE = config.MODELS_DIR / "model.keras"
REPORT_DIR = config.REPORTS_DIR / "train"


@dataclass(frozen=True)
class Fitted:
    model: keras.Model
    arch: str
    history: pd.DataFrame  # one row per epoch: epoch, loss, accuracy, val_*, lr, seconds

    def final(self) -> dict[str, float]:
        """The last epoch's metrics plus totals, as written to metrics.json."""
        last = self.history.iloc[-1]
        return {
            "loss": float(last["loss"]),
            "accuracy": float(last["accuracy"]),
            "val_loss": float(last["val_loss"]),
            "val_accuracy": float(last["val_accuracy"]),
            "epochs": len(self.history),
            "seconds": round(float(self.history["seconds"].sum()), 2),
            "params": self.model.count_params(),
        }


class EpochLog(keras.callbacks.Callback):
    """Collect each epoch's metrics, learning rate and wall time (Keras' History has neither)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, float]] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        # Added to Keras' shared logs dict, so the callbacks after this one (tracking) see it too.
        logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        seconds = time.perf_counter() - self._start
        self.rows.append({"epoch": epoch + 1, **logs, "seconds": seconds})


def dataset(split: data.Split, batch_size: int, shuffle: bool, seed: int) -> tf.data.Dataset:
    """Cached uint8 tensors, reshuffled each epoch from a fixed seed: fast and reproducible."""
    ds = tf.data.Dataset.from_tensor_slices((split.x, split.y)).cache()
    if shuffle:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def learning_rate(
    params: config.TrainParams, steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """Constant, or a linear warm-up to the peak followed by cosine decay to zero."""
    if params.lr_schedule == "constant":
        return params.learning_rate
    total = params.epochs * steps_per_epoch
    warmup = min(int(params.warmup_epochs * steps_per_epoch), total - 1)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(params.learning_rate, total)
    return keras.optimizers.schedules.CosineDecay(
        params.learning_rate / 20,
        total - warmup,
        warmup_target=params.learning_rate,
        warmup_steps=warmup,
    )


def optimizer(params: config.TrainParams, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    lr = learning_rate(params, steps_per_epoch)
    momentum = params.ema_momentum
    ema = {} if momentum is None else {"use_ema": True, "ema_momentum": momentum}
    return {
        "adam": lambda: keras.optimizers.Adam(lr, **ema),
        "adamw": lambda: keras.optimizers.AdamW(lr, **ema),
        "rmsprop": lambda: keras.optimizers.RMSprop(lr, **ema),
        "sgd": lambda: keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, **ema),
    }[params.optimizer]()


def ema_swap(params: config.TrainParams) -> list[keras.callbacks.Callback]:
    """With weight averaging, every epoch-end callback and the validation see the averaged
    weights, which are also the weights the model ends with (Keras' finalize step)."""
    if params.ema_momentum is None:
        return []
    return [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)]


def fit(
    splits: data.Splits,
    params: config.TrainParams,
    seed: int,
    scaling: dict[str, float],
    device: runtime.Device,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | str = "auto",
) -> Fitted:
    """Build a fresh CNN and fit it on the training split, validating on the validation split."""
    keras.utils.set_random_seed(seed)  # same seed -> same weights and batches, whatever ran before
    arch, spec = model.resolve(params.preset, params.model)
    steps = -(-len(splits.train) // params.batch_size)
    with device.strategy.scope():
        cnn = model.build_cnn(
            spec, scaling["scale"], scaling["offset"], name=arch, augment=params.augment
        )
        cnn.compile(
            optimizer=optimizer(params, steps),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=device.jit_compile,
        )
    log = EpochLog()
    cnn.fit(
        dataset(splits.train, params.batch_size, shuffle=True, seed=seed),
        validation_data=dataset(splits.val, 1024, shuffle=False, seed=seed),
        epochs=params.epochs,
        callbacks=[*ema_swap(params), log, *callbacks],
        verbose=verbose,
        shuffle=False,  # the dataset already reshuffles itself each epoch, seeded
    )
    return Fitted(cnn, arch, pd.DataFrame(log.rows))


def load_inputs(processed: Path) -> tuple[data.Splits, dict[str, float]]:
    splits = data.Splits(
        train=data.load_split(processed / "train.npz"), val=data.load_split(processed / "val.npz")
    )
    return splits, json.loads((processed / "scaling.json").read_text())


def save_outputs(fitted: Fitted, model_file: Path, report_dir: Path) -> None:
    with files.atomic_path(model_file) as tmp:
        fitted.model.save(tmp)
    with files.atomic_path(report_dir / "history.csv") as tmp:
        fitted.history.to_csv(tmp, index=False, float_format="%.6g")
    files.write_json(report_dir / "metrics.json", fitted.final())
    files.save_figure(plots.training_curves(fitted.history), report_dir / "curves.png")


def track_inputs(splits: data.Splits, digest: str) -> None:
    for name, split in (("train", splits.train), ("val", splits.val)):
        context = "training" if name == "train" else "validation"
        source = config.PROCESSED_DIR / f"{name}.npz"
        tracking.log_dataset(split, f"mnist-{name}", source, context, digest)
    tracking.log_files(sorted((config.REPORTS_DIR / "preprocess").glob("*")), "preprocess")


@exit_on_error
def main() -> None:
    params = config.load_from_cli(__doc__.splitlines()[0])
    splits, scaling = load_inputs(config.PROCESSED_DIR)
    device = runtime.configure()
    arch, _ = model.resolve(params.train.preset, params.train.model)
    digest = data.digest_dir(config.PROCESSED_DIR)
    tags = tracking.lineage(params, digest, arch, device.describe())
    with tracking.pipeline_run(params, tags) as run_id:
        print(f"MLflow run {run_id} in {tracking.tracking_uri()}")
        print(
            f"training on {device.describe()}: {len(splits.train)} images, "
            f"validating on {len(splits.val)}"
        )
        track_inputs(splits, digest)
        fitted = fit(
            splits,
            params.train,
            params.seed,
            scaling,
            device,
            callbacks=[tracking.EpochMetrics()],
            verbose=2,
        )
        save_outputs(fitted, MODEL_FILE, REPORT_DIR)
        tracking.log_metrics(fitted.final(), prefix="final_")
        tracking.log_files([REPORT_DIR / "curves.png", REPORT_DIR / "history.csv"], "train")
    tracking.save_run_file(run_id)
    final = fitted.final()
    print(
        f"{fitted.arch}: val_accuracy {final['val_accuracy']:.4f} after {final['epochs']} "
        f"epochs ({final['seconds']:.0f} s) -> {MODEL_FILE.relative_to(config.ROOT)}"
    )


if __name__ == "__main__":
    main()
