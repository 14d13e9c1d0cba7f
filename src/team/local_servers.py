"""Servers on 127.0.0.1: a free port, waiting until one answers, and the team stack's servers as
background processes (moto's S3 server and `mlflow server`). Each of those runs in a session of its
own (it outlives the terminal that started it) and is known by its pid and start time, so a
recycled pid is never mistaken for it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import requests

from common.errors import PipelineError

START_TIMEOUT_S = 120.0  # the MLflow server creates its tables on a first start: ~20 s here
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Pid:
    pid: int
    created: float  # psutil's create_time: tells this process from a later one with its pid


def start_s3(root: Path, port: int, env: dict[str, str], bucket: str) -> Pid:
    """moto's S3 API (objects in memory) with one empty bucket."""
    import boto3  # the team extra; imported here so `team_stack.py --help` needs none of it

    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    endpoint = f"http://127.0.0.1:{port}"
    pid = launch(command, env, root / "s3.log", ready_url=endpoint, name="the S3 server")
    credentials = {"aws_access_key_id": env["AWS_ACCESS_KEY_ID"]}
    credentials["aws_secret_access_key"] = env["AWS_SECRET_ACCESS_KEY"]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **credentials)
    s3.create_bucket(Bucket=bucket)
    return pid


def start_mlflow(root: Path, port: int, env: dict[str, str], artifacts: str) -> Pid:
    """`mlflow db upgrade` (the documented first step on a new database), then the server with
    the basic-auth app, artifacts proxied to `artifacts` so clients need no S3 credentials."""
    mlflow = [sys.executable, "-m", "mlflow"]
    upgrade = [*mlflow, "db", "upgrade", env["MLFLOW_BACKEND_STORE_URI"]]
    done = subprocess.run(upgrade, env={**os.environ, **env}, capture_output=True, text=True)
    if done.returncode != 0:
        raise PipelineError(f"mlflow db upgrade failed: {done.stderr.strip()[-500:]}")
    server = [*mlflow, "server", "--app-name", "basic-auth", "--host", "127.0.0.1"]
    server += ["--port", str(port), "--artifacts-destination", artifacts, "--workers", "1"]
    url = f"http://127.0.0.1:{port}/health"
    return launch(server, env, root / "mlflow.log", ready_url=url, name="the MLflow server")


def launch(command: list[str], env: dict[str, str], log: Path, ready_url: str, name: str) -> Pid:
    """Start `command` in the background, logging to `log`; return once `ready_url` answers."""
    with log.open("ab") as sink:
        process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid = Pid(process.pid, psutil.Process(process.pid).create_time())
    try:
        wait_until_up(process, ready_url, name, log)
    except BaseException:
        stop(pid)
        raise
    return pid


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(
    process: subprocess.Popen,
    url: str,
    name: str,
    log: Path | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> None:
    """Poll `url` until it answers; a server that exits or never answers fails, naming its log."""
    where = f"; its log: {log}" if log else ""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except (requests.ConnectionError, requests.Timeout):  # not listening yet
            pass
        try:
            process.wait(timeout=0.5)  # returns at once if the server has died
        except subprocess.TimeoutExpired:
            continue
        raise PipelineError(f"{name} exited at start{where}")
    raise PipelineError(f"{name} did not answer in {timeout_s:.0f} s{where}")


def is_alive(pid: Pid) -> bool:
    try:
        return psutil.Process(pid.pid).create_time() == pid.created
    except psutil.NoSuchProcess:
        return False


def stop(pid: Pid) -> None:
    """SIGTERM to the server's whole session (MLflow's workers too), SIGKILL if it lingers."""
    if not is_alive(pid):
        return
    group = [psutil.Process(pid.pid), *psutil.Process(pid.pid).children(recursive=True)]
    os.killpg(pid.pid, signal.SIGTERM)
    _, lingering = psutil.wait_procs(group, timeout=STOP_TIMEOUT_S)
    for process in lingering:
        process.kill()
