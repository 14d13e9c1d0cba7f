"""Run as a subprocess with KERAS_BACKEND set: tiny fit -> save -> load -> predict -> evaluate.

    python tests/backend_probe.py OUT_DIR [OTHER.keras ...]

Trains with weight averaging and a callback that predicts at each epoch's end (as the GPU
bench's test clock does), saves OUT_DIR/<backend>.keras, reloads it, and prints one JSON line:
the per-epoch losses, the reloaded model's predictions and evaluation, and the predictions of
each OTHER.keras (models saved by other backends) loaded on this backend.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from common import bootstrap

bootstrap.start(__name__)  # first: quiets the backends as they load

import keras  # noqa: E402
import numpy as np  # noqa: E402

from ml import config, runtime, training  # noqa: E402
from mnist_fakes import UNIT, synthetic_splits  # noqa: E402


class PredictEachEpoch(keras.callbacks.Callback):
    def __init__(self, x: np.ndarray) -> None:
        super().__init__()
        self.x = x

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.model.predict(self.x, verbose=0)


def predict_with(model_file: str, x: np.ndarray) -> list:
    return keras.saving.load_model(model_file).predict(x, verbose=0).tolist()


def main(out: Path, others: list[str]) -> None:
    splits = synthetic_splits(300, seed=5, val=50)
    params = config.load().train.model_copy(
        update={"epochs": 2, "batch_size": 32, "ema_momentum": 0.9}
    )
    device = runtime.configure()
    callback = PredictEachEpoch(splits.val.x)
    fitted = training.fit(splits, params, 0, UNIT, device, [callback], verbose=0)
    path = out / f"{device.backend}.keras"
    fitted.model.save(path)
    loaded = keras.saving.load_model(path)
    loss, accuracy = loaded.evaluate(splits.val.x, splits.val.y, verbose=0)
    report = {
        "device": device.describe(),
        "losses": fitted.history["loss"].tolist(),
        "predictions": loaded.predict(splits.val.x, verbose=0).tolist(),
        "in_memory_predictions": fitted.model.predict(splits.val.x, verbose=0).tolist(),
        "evaluate": [loss, accuracy],
        "others": {Path(other).stem: predict_with(other, splits.val.x) for other in others},
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
