"""Models in MLflow: log the CNN as the checked pyfunc of served_model.py and register it; load a
logged or registered model back (predict.py, serve.py), or MLflow's scoring app for it."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import yaml
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import ALREADY_EXISTS, RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.types import Schema, TensorSpec

from common import redact
from ml import model as ml_model
from tracking import registry, store

# Pinned so log_model skips its ~10 s requirement inference, and serving gets the exact stack:
# these, plus the Keras backend that trained the model (a .keras file loads on any backend).
SERVING_PACKAGES = ("keras", "mlflow", "numpy", "pandas")


SERVED_MODEL = str(Path(__file__).with_name("served_model.py"))


BACKEND_PACKAGES = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib"), "torch": ("torch",)}


ALREADY_EXISTS_CODES = {ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(ALREADY_EXISTS)}


def log_and_register(model: keras.Model, sample: np.ndarray, registered_name: str) -> str:
    """Log the model as served_model.py's checked pyfunc; register it; return its new version.

    The signature declares the output only: an input schema would make MLflow cast and reject
    requests before the model's own checks run (see served_model.py). The input example shows
    the canonical input, a batch of (28, 28, 1) uint8 images.
    """
    packages = (*SERVING_PACKAGES, *BACKEND_PACKAGES[keras.backend.backend()])
    pins = [f"{package}=={metadata.version(package)}" for package in packages]
    outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, 10), "probabilities")])
    with tempfile.TemporaryDirectory() as scratch:
        keras_file = Path(scratch) / "model.keras"
        ml_model.save(model, keras_file)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=SERVED_MODEL,
            artifacts={"keras_model": str(keras_file)},
            signature=ModelSignature(outputs=outputs),
            input_example=sample,
            pip_requirements=pins,
        )
    # Registered through the client, not log_model's registered_model_name: that one prints
    # two lines of its own ("Registered model ... already exists", "Created version ...")
    # around the one line the stage prints about the same version.
    client = mlflow.MlflowClient()
    try:
        client.create_registered_model(registered_name)
    except MlflowException as err:
        if err.error_code not in ALREADY_EXISTS_CODES:  # another evaluation may have made it
            raise
    version = client.create_model_version(
        registered_name, info.model_uri, run_id=info.run_id, model_id=info.model_id
    )
    return str(version.version)


def register_challenger(
    model: keras.Model, sample: np.ndarray, name: str, tags: Mapping[str, Any]
) -> str:
    """Log and register the model as `challenger` (never `champion`: that needs a test score)."""
    with registry.allowed_to_change(name):
        version = log_and_register(model, sample, name)
        registry.mark_challenger(mlflow.MlflowClient(), name, version, {"source": "tune", **tags})
    return version


def registered_parts(uri: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version) of a models:/name@alias or models:/name/N URI; ("", None, None)
    for any other URI."""
    if not uri.startswith("models:/"):
        return "", None, None
    name, _, alias = uri.removeprefix("models:/").partition("@")
    if alias:
        return name, alias, None
    name, _, version = name.partition("/")
    return name, None, version if version.isdigit() else None


def resolved_version(uri: str) -> str | None:
    """The registry version a models:/name@alias or models:/name/N URI names (None: another URI
    or no such version)."""
    name, alias, version = registered_parts(uri)
    if alias:
        return registry.alias_version(mlflow.MlflowClient(), name, alias)
    return version


@dataclass(frozen=True)
class LoadedModel:
    predict: Callable[[np.ndarray], np.ndarray]  # the served path: input checks, then the CNN
    cnn: keras.Model  # the Keras model inside, for looking at its layers


class UntrustedCode(store.TrackingError):
    """The model's code is not this checkout's served_model.py; the message says how to go on."""


def load_model(uri: str, trust_code: bool = False) -> LoadedModel:
    """Load a logged or registered model (e.g. models:/mnist-cnn@champion).

    Through pyfunc, as `mlflow models serve` loads it: the same checks and the same fast path.
    """
    logged = load_pyfunc(uri, trust_code)
    return LoadedModel(logged.predict, logged.unwrap_python_model().cnn)


def scoring_app(logged: mlflow.pyfunc.PyFuncModel) -> Any:
    """MLflow's scoring server (the ASGI app `mlflow models serve` runs) for a loaded model."""
    from mlflow.pyfunc import scoring_server  # imports FastAPI: only the server needs it

    return scoring_server.init(logged)


def card(uri: str) -> dict[str, str | None]:
    """Which model a URI names, for people: registered name, version, alias, and the page of
    the run that logged it when the tracking store is a server with a UI (else None)."""
    version = resolved_version(uri)
    name, alias, _ = registered_parts(uri)
    run_url = None
    if version is not None:
        client = mlflow.MlflowClient()
        registered = client.get_model_version(name, version)
        alias = alias or ", ".join(registered.aliases) or None
        run_url = store.run_page(registered.run_id) if registered.run_id else None
    else:
        name = Path(uri).name
    return {"name": name, "version": version, "alias": alias, "uri": uri, "run_url": run_url}


def load_pyfunc(uri: str, trust_code: bool = False) -> mlflow.pyfunc.PyFuncModel:
    """Download the model, check the code it would run, then load it."""
    store.connect(store.tracking_uri())
    with tempfile.TemporaryDirectory() as scratch:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=scratch))
        except MlflowException as err:
            raise store.TrackingError(
                f"cannot load model {uri} from {redact.uri(mlflow.get_tracking_uri())}: "
                f"{err.message}. Run `dvc repro` to train and register one."
            ) from err
        if not trust_code:
            check_code(uri, local)
        return mlflow.pyfunc.load_model(str(local))


def check_code(uri: str, model_dir: Path) -> None:
    """Loading a model runs the code logged with it, as whoever loads it, and any account that
    may register a version could have logged any code. Only the code this checkout serves with
    is run unless the user says otherwise."""
    flavor = yaml.safe_load((model_dir / "MLmodel").read_text())["flavors"]["python_function"]
    logged = model_dir / Path(flavor.get("model_code_path") or "unknown").name
    if logged.is_file() and logged.read_bytes() == Path(SERVED_MODEL).read_bytes():
        return
    raise UntrustedCode(
        f"{uri} would run code other than this checkout's src/tracking/served_model.py (a model "
        f"logged by another version of the project, or by someone else): loading it runs that "
        f"code as you; read it (`mlflow artifacts download -u {uri}`), then pass "
        f"--trust-model-code to load it anyway"
    )
