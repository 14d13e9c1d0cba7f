"""The logged model as MLflow loads and serves it: the Keras CNN behind strict input checks.

MLflow logs this file as the model's code ("models from code"), so it is copied into every logged
model and imports nothing from this project. Why a pyfunc and not the `mlflow.keras` flavor:
- checks: that flavor's input schema makes the scoring server cast a request to the schema's
  dtype before the model sees it, so 0..1 float pixels became zeros and got a confident,
  wrong HTTP 200; and every MlflowException message there quotes the whole request (7 KB for one
  image). Here the model checks its input itself and answers a short 400;
- speed: that flavor's predict is `model.predict`, which sets up a data pipeline per call
  (mlflow#5259); `predict_on_batch` runs the compiled function directly (bench/bench_serving.py).

Accepted: a batch of 1 to MAX_IMAGES images of whole-number pixels 0..255 (MNIST's own scale:
the model rescales inside), shaped (N, 28, 28, 1), (N, 28, 28) or (N, 784); a JSON list of such
images, a NumPy array or a pandas DataFrame of 784 columns. Answer: (N, 10) class probabilities.
"""

from __future__ import annotations

from typing import Any

import keras
import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

SIDE = 28
SHAPES = ((SIDE, SIDE, 1), (SIDE, SIDE), (SIDE * SIDE,))
# Bounds one request's work and memory (a 10,000-image JSON body is ~25 MB); split larger batches.
MAX_IMAGES = 10_000
# Images per compiled call: large enough to keep both cores busy, small enough that the first
# conv layer's activations (64 x 24 x 24 floats per image) stay near 300 MB. Smaller chunks ran
# 1.3-1.6x faster on an AVX2 CPU and slower on an AVX-512 one (bench/README.md, Serving).
CHUNK = 2048


class RejectedInput(MlflowException):
    """A request the model refuses: HTTP 400 with a message that stays short.

    MLflow's scoring server rewrites the message of any MlflowException a model raises to quote
    the whole request first ("Failed to predict data '<input>'"). This message ignores that
    rewrite, so the client reads only what is wrong and how to fix it, and no input is echoed.
    """

    def __init__(self, message: str) -> None:
        self._short = message
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._short

    @message.setter
    def message(self, _rewritten: str) -> None:
        """Keep the short message (see the class docstring)."""


def as_images(model_input: Any) -> np.ndarray:
    """Check a batch and return it as (N, 28, 28, 1) uint8; RejectedInput says what is wrong."""
    pixels = numeric(model_input)
    if pixels.ndim == 0:
        raise RejectedInput("expected a batch (a list) of images; got a single value")
    if len(pixels) == 0:
        raise RejectedInput("empty batch: send a list of 1 or more images")
    if pixels.shape[1:] not in SHAPES:
        raise RejectedInput(
            f"each image must be 28x28, 28x28x1 or 784 pixels; got a batch of shape "
            f"{pixels.shape[:5]}"
        )
    if len(pixels) > MAX_IMAGES:
        raise RejectedInput(
            f"{len(pixels)} images is more than one request takes ({MAX_IMAGES}); split the batch"
        )
    check_whole_0_255(pixels)
    return pixels.reshape(-1, SIDE, SIDE, 1).astype(np.uint8)


def numeric(model_input: Any) -> np.ndarray:
    if isinstance(model_input, pd.DataFrame):
        model_input = model_input.to_numpy()
    try:
        pixels = np.asarray(model_input)
        if pixels.dtype == object:  # e.g. lists MLflow left unconverted: convert, or say why not
            pixels = np.asarray(pixels.tolist(), dtype=np.float64)
    except (ValueError, TypeError) as err:
        reason = "of different sizes" if "inhomogeneous" in str(err) else "not all numbers"
        raise RejectedInput(f"pixels must be integers 0..255; the images are {reason}") from None
    if pixels.dtype.kind not in "iuf":
        raise RejectedInput(f"pixels must be integers 0..255; got {kind_name(pixels.dtype)}")
    return pixels


def kind_name(dtype: np.dtype) -> str:
    return {"b": "booleans", "U": "strings", "S": "bytes"}.get(dtype.kind, f"{dtype} values")


def check_whole_0_255(pixels: np.ndarray) -> None:
    if pixels.dtype.kind == "f":
        if not np.isfinite(pixels).all():
            raise RejectedInput("pixels must be integers 0..255; got NaN or infinity")
        if (pixels != np.round(pixels)).any():
            if pixels.min() >= 0 and pixels.max() <= 1:
                raise RejectedInput(
                    "pixels must be integers 0..255; got floats in 0..1 — multiply by 255"
                )
            raise RejectedInput(
                "pixels must be integers 0..255; got fractional values — round them"
            )
    low, high = pixels.min(), pixels.max()
    if low < 0 or high > 255:
        raise RejectedInput(f"pixels must be integers 0..255; got values from {low:g} to {high:g}")


class DigitClassifier(mlflow.pyfunc.PythonModel):
    """Probabilities of the digits 0-9 for a batch of 28x28 images (see the module docstring)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.cnn = keras.saving.load_model(context.artifacts["keras_model"])

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        images = as_images(model_input)
        chunks = [
            self.cnn.predict_on_batch(images[start : start + CHUNK])
            for start in range(0, len(images), CHUNK)
        ]
        return np.concatenate([np.asarray(chunk) for chunk in chunks])


mlflow.models.set_model(DigitClassifier())
