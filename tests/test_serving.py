"""Serving: a real `mlflow models serve` process answers digits and rejects bad input with 4xx."""

from __future__ import annotations

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


@pytest.fixture
def server(mlflow_store: str) -> Iterator[str]:
    """Register a small model as champion, serve it on 127.0.0.1, yield the base URL."""
    tracking.connect(mlflow_store)
    mlflow.set_experiment("serving")
    cnn = model.build_cnn(config.ModelSpec(blocks=[config.ConvBlock(filters=4)], dense=[16]))
    with mlflow.start_run():
        version = registry.log_and_register(cnn, np.zeros((2, 28, 28, 1), np.uint8), "digits")
        registry.apply_registry_policy("digits", version, 0.995, floor=0.99)
    url = closed_port_url()
    env = venv_env()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            "models:/digits@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            url.rsplit(":", 1)[1],
        ],
        env=env,
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


def test_served_model_answers_digits_and_rejects_bad_input_with_4xx(server):
    pixels = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1)).tolist()
    ok = requests.post(f"{server}/invocations", json={"inputs": pixels}, timeout=30)
    assert ok.status_code == 200
    probs = np.array(ok.json()["predictions"])
    assert probs.shape == (3, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    wrong_shape = requests.post(f"{server}/invocations", json={"inputs": [[1, 2, 3]]}, timeout=30)
    assert wrong_shape.status_code == 400 and "does not match expected shape" in wrong_shape.text
    wrong_type = requests.post(
        f"{server}/invocations", json={"inputs": [[["a"] * 28] * 28]}, timeout=30
    )
    assert 400 <= wrong_type.status_code < 500
