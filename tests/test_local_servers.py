"""local_servers: waiting for a server on 127.0.0.1, against real processes and a real listener."""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests

from common.errors import PipelineError
from conftest import QuietHandler, closed_port_url, serving
from team import local_servers


@pytest.fixture
def alive() -> Iterator[subprocess.Popen]:
    """A process that stays up until the test ends (it waits for its stdin to close)."""
    process = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
    yield process
    process.stdin.close()
    process.wait(timeout=30)


def test_waiting_ends_as_soon_as_the_url_answers(alive, tmp_path):
    with serving(functools.partial(QuietHandler, directory=str(tmp_path))) as url:
        local_servers.wait_until_up(alive, url, "the web server")
    assert alive.poll() is None


def test_a_server_that_exits_at_start_is_named_with_its_log(tmp_path):
    died = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    log = tmp_path / "server.log"
    with pytest.raises(PipelineError, match=rf"^the web server exited at start; its log: {log}$"):
        local_servers.wait_until_up(died, closed_port_url(), "the web server", log)


def test_nothing_listens_on_a_free_port():
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{local_servers.free_port()}", timeout=10)
