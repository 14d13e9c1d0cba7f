"""Serving: a real `mlflow models serve` answers digits and refuses bad input with a short 4xx."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import mlflow
import numpy as np
import pytest
import requests

import config
import model
import registry
import tracking
from conftest import closed_port_url, venv_env

pytestmark = pytest.mark.slow

PIXELS = np.random.default_rng(0).integers(0, 256, (3, 28, 28))
IMAGE = PIXELS[:1]
# One request per class of bad input, and the words its answer must contain.
BAD_REQUESTS = {
    "floats in 0..1": ({"inputs": (IMAGE / 255).tolist()}, "multiply by 255"),
    "fractional floats": ({"inputs": (IMAGE * 0 + 127.6).tolist()}, "round them"),
    "out of range": ({"inputs": (IMAGE + 256).tolist()}, "got values from 256"),
    "wrong shape": ({"inputs": IMAGE.reshape(1, 4, 196).tolist()}, "(1, 4, 196)"),
    "non-numeric": ({"inputs": [[["a"] * 28] * 28]}, "got strings"),
    "empty batch": ({"inputs": []}, "empty batch"),
    "ragged": ({"inputs": [[*IMAGE[0].tolist()[:27], [1] * 5]]}, "inhomogeneous shape"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Register a small model as champion, serve it on 127.0.0.1, yield the base URL."""
    store = f"sqlite:///{tmp_path_factory.mktemp('served') / 'mlflow.db'}"
    tracking.connect(store)
    mlflow.set_experiment("serving")
    cnn = model.build_cnn(config.ModelSpec(blocks=[config.ConvBlock(filters=4)], dense=[16]))
    with mlflow.start_run():
        version = registry.log_and_register(cnn, IMAGE[..., np.newaxis].astype(np.uint8), "digits")
        registry.apply_registry_policy("digits", version, 0.995, floor=0.99)
    url = closed_port_url()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/digits@champion"]
    options = ["--env-manager", "local", "-h", "127.0.0.1", "-p", url.rsplit(":", 1)[1]]
    process = subprocess.Popen(
        command + options,
        env={**venv_env(), "MLFLOW_TRACKING_URI": store},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_ready(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_until_ready(url: str, process: subprocess.Popen, limit_s: float = 180) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited: {process.stderr.read()[-2000:]}")
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.5)
    pytest.fail(f"server not ready within {limit_s} s")


@pytest.mark.parametrize("shape", [(3, 28, 28, 1), (3, 28, 28), (3, 784)])
def test_each_documented_shape_gets_the_same_probabilities(server, shape):
    reference = requests.post(f"{server}/invocations", json={"inputs": PIXELS.tolist()}, timeout=30)
    body = {"inputs": PIXELS.reshape(shape).tolist()}
    answer = requests.post(f"{server}/invocations", json=body, timeout=30)
    assert answer.status_code == reference.status_code == 200
    probabilities = np.array(answer.json()["predictions"])
    assert probabilities.shape == (3, 10) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    np.testing.assert_allclose(probabilities, reference.json()["predictions"], rtol=1e-6)


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_input_gets_a_short_400_without_the_input_and_the_server_lives_on(server, case):
    body, says = BAD_REQUESTS[case]
    answer = requests.post(f"{server}/invocations", json=body, timeout=30)
    message = answer.json()["message"]
    assert answer.status_code == 400, message
    assert says in message and len(message) <= 300
    assert json.dumps(body["inputs"])[:40] not in message  # the input is not echoed back
    still = requests.post(f"{server}/invocations", json={"inputs": IMAGE.tolist()}, timeout=30)
    assert still.status_code == 200
