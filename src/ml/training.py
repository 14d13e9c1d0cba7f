"""The project's one training loop: `fit()` builds a fresh CNN and trains it on the splits.

The train stage, the tuner and the benchmarks all call it. It is plain Keras 3 on numpy arrays,
so it runs on any backend; tracking and pruning arrive as callbacks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from common import files, paths
from ml import config, data, model, runtime

VAL_BATCH = 1024  # validation only runs the forward pass: big batches are cheaper per image


@dataclass(frozen=True)
class Fitted:
    model: keras.Model
    arch: str
    history: pd.DataFrame  # one row per epoch: epoch, loss, accuracy, val_*, lr, seconds

    def final(self) -> dict[str, float]:
        """The last epoch's metrics and the model's size, as written to metrics.json: the same
        on every run with the same params, data and seed (no wall-clock time here)."""
        last = self.history.iloc[-1]
        return {
            "train_loss": float(last["loss"]),
            "train_accuracy": float(last["accuracy"]),
            "val_loss": float(last["val_loss"]),
            "val_accuracy": float(last["val_accuracy"]),
            "epochs": len(self.history),
            "params": self.model.count_params(),
        }

    @property
    def seconds(self) -> float:
        return round(float(self.history["seconds"].sum()), 2)


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


class SwapEMAWeights(keras.callbacks.SwapEMAWeights):
    """Keras' SwapEMAWeights, with its last-epoch copy of the averaged weights made a real copy.

    Keras 3.15 ends training with `average.assign(weight)`. On JAX that makes both variables
    hold one array, and the next compiled step donates (frees) it: a predict or evaluate run
    during fit (a callback's) then leaves the model's weights deleted ("Array has been deleted").
    TensorFlow takes its own code path and keeps Keras' method."""

    def _backend_finalize_ema_values(self, optimizer: keras.optimizers.Optimizer) -> None:
        averages = optimizer._model_variables_moving_average
        for weight, average in zip(optimizer._trainable_variables, averages, strict=True):
            average.assign(keras.ops.copy(weight))


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
    options = {} if momentum is None else {"use_ema": True, "ema_momentum": momentum}
    if params.weight_decay is not None:  # else each optimizer's default: AdamW's 0.004, none
        options["weight_decay"] = params.weight_decay
    return {
        "adam": lambda: keras.optimizers.Adam(lr, **options),
        "adamw": lambda: keras.optimizers.AdamW(lr, **options),
        "rmsprop": lambda: keras.optimizers.RMSprop(lr, **options),
        "sgd": lambda: keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, **options),
    }[params.optimizer]()


def ema_swap(params: config.TrainParams) -> list[keras.callbacks.Callback]:
    """With weight averaging, every epoch-end callback and the validation see the averaged
    weights, which are also the weights the model ends with (Keras' finalize step)."""
    if params.ema_momentum is None:
        return []
    return [SwapEMAWeights(swap_on_epoch=True)]


def loss(smoothing: float) -> keras.losses.Loss:
    """Cross-entropy against the integer labels; with label smoothing against one-hot targets,
    since Keras' sparse cross-entropy cannot smooth."""
    if smoothing == 0:
        return keras.losses.SparseCategoricalCrossentropy()
    return keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)


def targets(labels: np.ndarray, smoothing: float) -> np.ndarray:
    """What `loss(smoothing)` compares the predictions with ("accuracy" follows their shape)."""
    return labels if smoothing == 0 else keras.utils.to_categorical(labels, data.NUM_CLASSES)


def fit(
    splits: data.Splits,
    params: config.TrainParams,
    seed: int,
    scaling: data.Scaling,
    device: runtime.Device,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | str = "auto",
) -> Fitted:
    """Build a fresh CNN and fit it on the training split, validating on the validation split."""
    keras.utils.set_random_seed(seed)  # same seed -> same weights and batches, whatever ran before
    steps = -(-len(splits.train) // params.batch_size)
    with device.scope():
        cnn = model.build_cnn(
            model.architecture(params),
            scaling.scale,
            scaling.offset,
            name=params.arch,
            augment=params.augment,
        )
        cnn.compile(
            optimizer=optimizer(params, steps),
            loss=loss(params.label_smoothing),
            metrics=["accuracy"],
            jit_compile=device.jit_compile,
            steps_per_execution=device.steps_per_execution,
        )
    log = EpochLog()
    # uint8 numpy arrays: Keras batches them for every backend (on TensorFlow through tf.data),
    # reshuffling each epoch from the seed set above.
    cnn.fit(
        splits.train.x,
        targets(splits.train.y, params.label_smoothing),
        batch_size=params.batch_size,
        epochs=params.epochs,
        validation_data=(splits.val.x, targets(splits.val.y, params.label_smoothing)),
        validation_batch_size=VAL_BATCH,
        callbacks=[*ema_swap(params), log, *callbacks],
        verbose=verbose,
        shuffle=True,
    )
    return Fitted(cnn, params.arch, pd.DataFrame(log.rows))


def load_inputs(processed: Path = paths.PROCESSED_DIR) -> tuple[data.Splits, data.Scaling]:
    """The train and validation splits and the scaling the preprocess stage chose."""
    splits = data.Splits(
        train=data.load_split(processed / "train.npz"), val=data.load_split(processed / "val.npz")
    )
    fix = "`dvc repro` rebuilds it (or python src/preprocess.py)"
    scaling = files.read_json(processed / "scaling.json", fix)
    if not isinstance(scaling, dict) or set(scaling) != {"scale", "offset"}:
        raise data.DataError(f"{processed / 'scaling.json'}: not a scale and offset; {fix}")
    return splits, data.Scaling(**scaling)
