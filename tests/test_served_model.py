"""The logged model's input checks and fast path, through MLflow's own pyfunc loader."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from ml import config, model
from tracking import models, registry, store
from tracking.served_model import MAX_IMAGES, RejectedInput, as_images

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (3, 28, 28)).astype(np.uint8)


@pytest.mark.parametrize(
    "batch",
    [
        PIXELS[..., np.newaxis],
        PIXELS,
        PIXELS.reshape(3, 784),
        PIXELS.astype(np.float64),  # whole-number floats, as JSON often carries them
        PIXELS.tolist(),
        pd.DataFrame(PIXELS.reshape(3, 784)),
    ],
    ids=["N28x28x1", "N28x28", "N784", "whole floats", "lists", "dataframe"],
)
def test_each_accepted_form_gives_the_same_uint8_images(batch):
    images = as_images(batch)
    assert images.dtype == np.uint8 and images.shape == (3, 28, 28, 1)
    np.testing.assert_array_equal(images[..., 0], PIXELS)


@pytest.mark.parametrize(
    ("batch", "says"),
    [
        (PIXELS / 255.0, "got floats in 0..1 — multiply by 255"),
        (PIXELS * 0 + 127.6, "got fractional values — round them"),
        (np.full((1, 784), np.nan), "got NaN or infinity"),
        (np.full((1, 784), 256), "got values from 256 to 256"),
        (np.full((1, 784), -1), "got values from -1 to -1"),
        (np.zeros((2, 27, 27)), "got a batch of shape (2, 27, 27)"),
        (np.zeros((2, 5)), "got a batch of shape (2, 5)"),
        (np.zeros((0, 784)), "empty batch"),
        ([], "empty batch"),
        (7, "got a single value"),
        ([[["a"] * 28] * 28], "got strings"),
        (np.ones((1, 784), bool), "got booleans"),
        ([[1, 2], [3]], "the images are of different sizes"),
        (np.zeros((MAX_IMAGES + 1, 784), np.uint8), "split the batch"),
    ],
    ids=[
        "unit floats",
        "fractions",
        "nan",
        "above 255",
        "negative",
        "27x27",
        "wrong width",
        "empty array",
        "empty list",
        "scalar",
        "strings",
        "booleans",
        "ragged",
        "too many",
    ],
)
def test_bad_batches_are_rejected_with_a_short_reason(batch, says):
    with pytest.raises(RejectedInput) as raised:
        as_images(batch)
    assert says in raised.value.message and len(raised.value.message) <= 300


def test_the_message_survives_the_scoring_servers_rewrite():
    """MLflow's server assigns `message` to quote the input; ours must not change."""
    error = RejectedInput("empty batch: send a list of 1 or more images")
    error.message = f"Failed to predict data '{PIXELS.tolist()}'. \nError: {error.message}"
    assert error.message == "empty batch: send a list of 1 or more images"
    assert error.get_http_status_code() == 400


def test_logged_model_checks_and_predicts_like_the_keras_model(mlflow_store):
    store.connect(mlflow_store)
    mlflow.set_experiment("served")
    cnn = model.build_cnn(config.ModelSpec(blocks=[config.ConvBlock(filters=4)], dense=[16]))
    with mlflow.start_run():
        version = models.log_and_register(cnn, PIXELS[:2, ..., np.newaxis], "digits")
    registry.mark_challenger(mlflow.MlflowClient(), "digits", version, {})
    assert models.resolved_version("models:/digits@challenger") == version
    assert models.resolved_version(f"models:/digits/{version}") == version
    assert models.resolved_version("models:/digits@champion") is None  # no such alias yet
    loaded = mlflow.pyfunc.load_model(f"models:/digits/{version}")
    assert loaded.metadata.flavors.keys() == {"python_function"}
    probabilities = loaded.predict(PIXELS.reshape(3, 784))
    expected = cnn.predict(PIXELS[..., np.newaxis], verbose=0)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    # MLflow imports its own copy of served_model.py: the class differs, the error is the same.
    with pytest.raises(MlflowException, match="multiply by 255"):
        loaded.predict(PIXELS / 255.0)


def test_a_model_logged_with_other_code_is_refused_unless_trusted(
    mlflow_store, tmp_path, monkeypatch
):
    """A version anyone with an account registered, with code of their own: loading it would run
    that code. predict.py and serve.py load only this checkout's, or what the user trusts."""
    store.connect(mlflow_store)
    mlflow.set_experiment("served")
    cnn = model.build_cnn(config.ModelSpec(blocks=[config.ConvBlock(filters=4)], dense=[16]))
    with mlflow.start_run():
        ours = models.log_and_register(cnn, PIXELS[:2, ..., np.newaxis], "digits")
    theirs = tmp_path / "served_model.py"
    theirs.write_text(Path(models.SERVED_MODEL).read_text() + "\nprint('any code at all')\n")
    with monkeypatch.context() as patched, mlflow.start_run():
        patched.setattr(models, "SERVED_MODEL", str(theirs))
        other = models.log_and_register(cnn, PIXELS[:2, ..., np.newaxis], "digits")

    assert models.load_model(f"models:/digits/{ours}").predict(PIXELS).shape == (3, 10)
    with pytest.raises(models.UntrustedCode, match="pass --trust-model-code to load it anyway"):
        models.load_model(f"models:/digits/{other}")
    trusted = models.load_model(f"models:/digits/{other}", trust_code=True)
    assert trusted.predict(PIXELS).shape == (3, 10)
