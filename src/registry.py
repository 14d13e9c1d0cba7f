"""The model registry: log and register models, judge them, load them back.

Policy: every evaluated version becomes `challenger`, tagged with its test accuracy; `champion` is
the best-scoring judged version at or above the floor (the newest among equals). The champion is
settled by an optimistic loop rather than a lock, so it is safe however many evaluations finish
at once, on one machine or many sharing a tracking server (see `settle_champion`).
"""

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
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import ALREADY_EXISTS, RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.types import Schema, TensorSpec

import tracking

CHAMPION, CHALLENGER = "champion", "challenger"
SCORE_TAG = "test_accuracy"  # set only by evaluate: versions without it are never champion
# Pinned so log_model skips its ~10 s requirement inference, and serving gets the exact stack:
# these, plus the Keras backend that trained the model (a .keras file loads on any backend).
SERVING_PACKAGES = ("keras", "mlflow", "numpy", "pandas")
SERVED_MODEL = str(Path(__file__).with_name("served_model.py"))
BACKEND_PACKAGES = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib"), "torch": ("torch",)}
ALREADY_EXISTS_CODES = {ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(ALREADY_EXISTS)}
# Each round re-reads after writing; a round only repeats when another evaluation wrote in
# between, so even many racing evaluations settle in a few rounds.
MAX_ROUNDS = 20


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
        model.save(keras_file)
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


@dataclass(frozen=True)
class Decision:
    promote: bool
    accuracy: float
    champion_accuracy: float | None
    floor: float

    def describe(self) -> str:
        before = (
            "no champion yet"
            if self.champion_accuracy is None
            else f"champion {self.champion_accuracy:.4f}"
        )
        verdict = "becomes champion" if self.promote else "stays challenger"
        return f"test accuracy {self.accuracy:.4f} vs {before} (floor {self.floor:.4f}): {verdict}"


def best_version(scores: Mapping[str, float], floor: float) -> str | None:
    """The judged version with the highest score at or above the floor; the newest among equals."""
    eligible = [version for version, score in scores.items() if score >= floor]
    return max(eligible, key=lambda v: (scores[v], int(v)), default=None)


def judged_scores(client: mlflow.MlflowClient, name: str) -> dict[str, float]:
    """{version: test accuracy} of every version evaluate has judged."""
    versions = client.search_model_versions(f"name = '{name}'")
    return {
        str(v.version): float(v.tags[SCORE_TAG]) for v in versions if SCORE_TAG in (v.tags or {})
    }


def alias_version(client: mlflow.MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def settle_champion(
    client: mlflow.MlflowClient,
    name: str,
    floor: float,
    before_write: Callable[[], None] = lambda: None,
) -> str | None:
    """Point `champion` at the best judged version; return it (None: none reaches the floor).

    Read the scores, write the alias, read the scores again: done when nothing changed. Why this
    is safe without a lock: every evaluation tags its score before its first read, so the last
    read of all sees every score; whoever writes after that read must read again, so the alias
    left at the end is the best. A plain read-decide-write could leave the worse of two racing
    models as champion. `before_write` lets tests run a rival evaluation at the worst moment.
    """
    scores = judged_scores(client, name)
    for _ in range(MAX_ROUNDS):
        best = best_version(scores, floor)
        if best is not None and alias_version(client, name, CHAMPION) != best:
            before_write()
            client.set_registered_model_alias(name, CHAMPION, best)
        again = judged_scores(client, name)
        if again == scores:
            return best
        scores = again
    raise tracking.TrackingError(
        f"the champion of {name} did not settle in {MAX_ROUNDS} rounds: other evaluations kept "
        f"writing; rerun `python src/evaluate.py` once they are done"
    )


def apply_registry_policy(
    name: str,
    version: str,
    accuracy: float,
    floor: float,
    before_write: Callable[[], None] = lambda: None,
) -> Decision:
    """Make the new version `challenger`, tag its score, and settle `champion` (see above)."""
    client = mlflow.MlflowClient()
    before = alias_version(client, name, CHAMPION)
    before_accuracy = judged_scores(client, name).get(before) if before else None
    mark_challenger(
        client,
        name,
        version,
        {"champion_accuracy_before": before_accuracy, "floor": floor},
    )
    # The score goes last: from this write on, any racing evaluation counts this version in.
    client.set_model_version_tag(name, version, SCORE_TAG, f"{accuracy:.6f}")
    champion = settle_champion(client, name, floor, before_write)
    decision = Decision(champion == version, accuracy, before_accuracy, floor)
    client.set_model_version_tag(name, version, "decision", decision.describe())
    return decision


def mark_challenger(
    client: mlflow.MlflowClient, name: str, version: str, tags: Mapping[str, Any]
) -> None:
    """Point `challenger` at the version and tag it with the evidence it was judged on."""
    client.set_registered_model_alias(name, CHALLENGER, version)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def register_challenger(
    model: keras.Model, sample: np.ndarray, name: str, tags: Mapping[str, Any]
) -> str:
    """Log and register the model as `challenger` (never `champion`: that needs a test score)."""
    version = log_and_register(model, sample, name)
    mark_challenger(mlflow.MlflowClient(), name, version, {"source": "tune", **tags})
    return version


def resolved_version(uri: str) -> str | None:
    """The registry version a models:/name@alias or models:/name/N URI names (None: another URI
    or no such version)."""
    if not uri.startswith("models:/"):
        return None
    name, _, alias = uri.removeprefix("models:/").partition("@")
    if alias:
        return alias_version(mlflow.MlflowClient(), name, alias)
    name, _, version = name.partition("/")
    return version if version.isdigit() else None


@dataclass(frozen=True)
class LoadedModel:
    predict: Callable[[np.ndarray], np.ndarray]  # the served path: input checks, then the CNN
    cnn: keras.Model  # the Keras model inside, for looking at its layers


def load_model(uri: str) -> LoadedModel:
    """Load a logged or registered model (e.g. models:/mnist-cnn@champion).

    Through pyfunc, as `mlflow models serve` loads it: the same checks and the same fast path.
    """
    logged = load_pyfunc(uri)
    return LoadedModel(logged.predict, logged.unwrap_python_model().cnn)


def scoring_app(uri: str) -> Any:
    """MLflow's scoring server (the ASGI app `mlflow models serve` runs) for this model."""
    from mlflow.pyfunc import scoring_server  # imports FastAPI: only the server needs it

    return scoring_server.init(load_pyfunc(uri))


def load_pyfunc(uri: str) -> mlflow.pyfunc.PyFuncModel:
    tracking.connect(tracking.tracking_uri())
    try:
        return mlflow.pyfunc.load_model(uri)
    except MlflowException as err:
        raise tracking.TrackingError(
            f"cannot load model {uri} from {tracking.masked(mlflow.get_tracking_uri())}: "
            f"{err.message}. Run `dvc repro` to train and register one."
        ) from err
