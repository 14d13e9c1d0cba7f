"""Serving: a real `mlflow models serve` and src/serve.py answer digits and refuse bad input
with a short 4xx; serve.py also refuses what reaches MLflow's server unchecked."""

from __future__ import annotations

import http.client
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests

from conftest import SERVE_PY, register_tiny_model, running

pytestmark = pytest.mark.server

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


URI = "models:/digits@champion"
# Each way to serve, as the command for a port on 127.0.0.1.
LAUNCHERS: dict[str, Callable[[str], list[str]]] = {
    "mlflow models serve": lambda port: [
        *(sys.executable, "-m", "mlflow", "models", "serve", "-m", URI),
        *("--env-manager", "local", "-h", "127.0.0.1", "-p", port),
    ],
    # The project's server (its host defaults to 127.0.0.1), with a small size cap so the 413
    # tests send little.
    "src/serve.py": lambda port: [
        *(sys.executable, SERVE_PY, "--model", URI, "--port", port, "--max-body-mb", "1"),
    ],
}


@pytest.fixture(scope="module")
def served_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tracking store with a small model registered as `digits@champion`."""
    return register_tiny_model(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def served(served_store: str) -> Iterator[Callable[[str], str]]:
    """Starts each launcher on 127.0.0.1 the first time a test asks; gives its base URL."""
    with ExitStack() as servers:
        started: dict[str, str] = {}

        def url_of(launcher: str) -> str:
            if launcher not in started:
                command = LAUNCHERS[launcher]("{port}")
                started[launcher] = servers.enter_context(running(command, served_store))
            return started[launcher]

        yield url_of


@pytest.fixture(params=list(LAUNCHERS))
def server(request: pytest.FixtureRequest, served: Callable[[str], str]) -> str:
    return served(request.param)


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


def assert_alive(url: str) -> None:
    answer = requests.post(f"{url}/invocations", json={"inputs": IMAGE.tolist()}, timeout=30)
    assert answer.status_code == 200


def test_a_post_without_content_type_gets_a_415_naming_the_header(served):
    url = served("src/serve.py")
    answer = requests.post(f"{url}/invocations", data=json.dumps({"inputs": IMAGE.tolist()}))
    assert "Content-Type" not in answer.request.headers
    assert answer.status_code == 415
    message = answer.json()["message"]
    assert "Content-Type: application/json" in message and "image/png (for /digit)" in message
    assert_alive(url)


def test_json_that_does_not_parse_gets_a_400_saying_where_without_the_body(served):
    url = served("src/serve.py")
    body = '{"inputs": [[7, 7, "SECRET-TOKEN'
    answer = requests.post(
        f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 400
    assert answer.json()["message"].startswith("the body is not valid JSON: ")
    assert "column 20" in answer.text and "SECRET-TOKEN" not in answer.text
    assert_alive(url)


def test_an_announced_body_over_the_limit_is_refused_before_it_is_sent(served):
    url = served("src/serve.py")
    address = urlsplit(url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    connection.putrequest("POST", "/invocations")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(50_000_000))
    connection.endheaders(b'{"inputs": [')  # 12 bytes of the 50 MB announced: the rest never comes
    answer = connection.getresponse()
    assert answer.status == 413
    assert "(50,000,000 bytes) is over this server's limit of 1,000,000" in answer.read().decode()
    connection.close()
    assert_alive(url)


def test_a_streamed_body_is_cut_off_at_the_limit(served):
    url = served("src/serve.py")
    chunks = (b" " * 65_536 for _ in range(24))  # 1.5 MB, sent chunked: no size announced
    answer = requests.post(
        f"{url}/invocations", data=chunks, headers={"Content-Type": "application/json"}
    )
    assert answer.request.headers["Transfer-Encoding"] == "chunked"
    assert answer.status_code == 413
    assert answer.json()["message"].startswith("the body is over this server's limit")
    assert_alive(url)
