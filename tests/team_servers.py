"""The team stack's other servers for the team tests, on 127.0.0.1: an S3 API (moto's server)
and `mlflow server` with a PostgreSQL backend, artifacts proxied to S3, and basic auth."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import requests

from conftest import free_port

BUCKET = "mlflow"
# moto accepts any credentials; real ones come from the environment in real life.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "team-test", "AWS_SECRET_ACCESS_KEY": "team-test"}
ADMIN = "admin"


@contextmanager
def serving(command: list[str], url: str, env: dict[str, str], log: Path) -> Iterator[str]:
    """Run a server until the block ends; yield `url` once its /health (or /) answers."""
    with log.open("w") as sink:
        server = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            wait_until_up(server, url, log)
            yield url
        finally:
            server.terminate()
            server.wait(timeout=30)


def wait_until_up(server: subprocess.Popen, url: str, log: Path) -> None:
    """Poll until the server answers; a server that exits first fails with its log."""
    while True:
        try:
            requests.get(url, timeout=1)
            return
        except (requests.ConnectionError, requests.Timeout):  # not listening, or still starting
            pass
        try:
            server.wait(timeout=0.5)  # returns at once if the server has died
        except subprocess.TimeoutExpired:
            continue
        raise RuntimeError(f"{url} exited:\n{log.read_text()[-3000:]}")


@contextmanager
def s3(root: Path) -> Iterator[str]:
    """moto's S3 server with an empty bucket; yield its endpoint URL."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    env = {**os.environ, **S3_CREDENTIALS}
    with serving(command, f"http://127.0.0.1:{port}", env, root / "s3.log") as endpoint:
        client(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint


def client(endpoint: str) -> Any:  # boto3 builds its client classes at run time
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        **{key.lower(): value for key, value in S3_CREDENTIALS.items()},
    )


@contextmanager
def tracking(
    root: Path, backend: str, auth_db: str, s3_endpoint: str, admin_password: str
) -> Iterator[str]:
    """`mlflow db upgrade`, then `mlflow server` with basic auth; yield its URL."""
    env = {
        **os.environ,
        **S3_CREDENTIALS,
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex(),
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_config(root, auth_db)),
    }
    mlflow = str(Path(sys.executable).parent / "mlflow")
    subprocess.run([mlflow, "db", "upgrade", backend], env=env, check=True, capture_output=True)
    port = free_port()
    command = [
        mlflow,
        "server",
        "--app-name",
        "basic-auth",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        f"s3://{BUCKET}/artifacts",
        "--workers",
        "1",
    ]
    with serving(command, f"http://127.0.0.1:{port}/health", env, root / "mlflow.log"):
        yield f"http://127.0.0.1:{port}"


def auth_config(root: Path, database: str) -> Path:
    path = root / "basic_auth.ini"
    path.write_text(
        f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {database}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    return path
