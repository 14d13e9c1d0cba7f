"""The team stack's life: start (or revive) PostgreSQL, moto's S3 and an MLflow server with basic
auth on 127.0.0.1 and the team's accounts (accounts.py), report on them, stop them. Secrets are
generated, kept in owner-only files and never printed; the MLflow server gets them through its
environment, never its command line."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from common import files
from common.errors import PipelineError
from team import accounts, local_servers, postgres_cluster

BUCKET = "team"
ADMIN = "admin"
DATABASES = ("mlflow", "auth", "optuna")
NEEDS_EXTRA = ("moto", "boto3", "psycopg", "flask_wtf", "dvc_s3")  # flask_wtf: mlflow[auth]
# Who sources which file: whoever started the stack maintains the model; teammates are members.
ENV_FILES = {accounts.MAINTAINER: "env", accounts.MEMBER: "member.env"}


def default_dir() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "mnist-mlops-team"


@dataclass(frozen=True)
class Secrets:
    postgres: str
    admin: str  # users and permissions: the stack's own account, in no env file
    maintainer: str
    member: str
    flask_key: str  # signs the auth app's sessions and CSRF tokens
    s3_key_id: str
    s3_secret: str

    @classmethod
    def generate(cls) -> Secrets:
        # A key the user exported wins: the auth app's secret "comes from the environment".
        flask_key = os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY") or secrets.token_hex(32)
        token = secrets.token_urlsafe
        passwords = (token(18) for _ in range(4))  # 24 characters: MLflow wants at least 12
        return cls(*passwords, flask_key, f"team-{token(6)}", token(24))

    def accounts(self) -> dict[str, str]:
        """The team's MLflow accounts: name -> password."""
        return {accounts.MAINTAINER: self.maintainer, accounts.MEMBER: self.member}


@dataclass(frozen=True)
class Stack:
    """Where each server listens and which processes to stop; no secret in here."""

    postgres_data: str
    postgres_port: int
    s3_port: int
    mlflow_port: int
    pids: dict[str, local_servers.Pid]

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def postgres_url(self, database: str, password: str | None = None) -> str:
        account = postgres_cluster.USER + (f":{password}" if password else "")
        return f"postgresql://{account}@127.0.0.1:{self.postgres_port}/{database}"


def start(root: Path, registered_model: str, say: Callable[[str], None] = print) -> Stack:
    """Start the three servers and make the team's accounts, saying as each is up (a first start
    takes a minute); on any failure stop what started."""
    if (root / "stack.json").exists():
        return revive(root, say)
    _check_installed()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PipelineError(
            f"cannot use {root} for the stack ({err.strerror}): pick --dir"
        ) from err
    secret = Secrets.generate()
    files.write_private(root / "secrets.json", json.dumps(asdict(secret)))
    ports = [local_servers.free_port() for _ in range(3)]
    stack = Stack(str(_postgres_home(root) / "data"), *ports, pids={})
    try:
        data = Path(stack.postgres_data)
        postgres_cluster.create(data, stack.postgres_port, secret.postgres, DATABASES)
        say(f"PostgreSQL up ({data})")
        stack.pids["s3"] = local_servers.start_s3(root, stack.s3_port, _s3_env(secret), BUCKET)
        say("S3 up")
        stack.pids["mlflow"] = _start_mlflow(root, stack, secret)
        admin = (ADMIN, secret.admin)
        accounts.create(stack.mlflow_url, admin, secret.accounts(), registered_model)
        say(f"MLflow server up: accounts {', '.join(secret.accounts())}; model {registered_model}")
    except BaseException:
        _stop_servers(stack)
        shutil.rmtree(Path(stack.postgres_data).parent, ignore_errors=True)  # initdb needs none
        raise
    files.write_json(root / "stack.json", asdict(stack))
    for name, path in ENV_FILES.items():
        files.write_private(root / path, env_file(stack, secret, name))
    return stack


def revive(root: Path, say: Callable[[str], None]) -> Stack:
    """Start again whichever server of the stack in `root` is down (it crashed, or the machine
    rebooted), on its old port with its old secrets, so every exported variable stays valid."""
    stack = load(root)
    secret = Secrets(**files.read_json(root / "secrets.json", fix="stop it and start anew"))
    data = Path(stack.postgres_data)
    if not postgres_cluster.is_running(data):
        postgres_cluster.start(data, stack.postgres_port)
        say("PostgreSQL restarted")
    pids = dict(stack.pids)
    if not local_servers.is_alive(pids["s3"]):
        pids["s3"] = local_servers.start_s3(root, stack.s3_port, _s3_env(secret), BUCKET)
        say("S3 restarted, empty: moto kept the artifacts and DVC objects in memory")
    if not local_servers.is_alive(pids["mlflow"]):
        pids["mlflow"] = _start_mlflow(root, stack, secret)
        say("MLflow server restarted")
    revived = replace(stack, pids=pids)
    files.write_json(root / "stack.json", asdict(revived))
    return revived


def _check_installed() -> None:
    missing = [name for name in NEEDS_EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise PipelineError(f"the team extra is not installed ({missing[0]}): uv sync --extra team")
    if postgres_cluster.bin_dir() is None:
        raise PipelineError(f"no PostgreSQL server found: {postgres_cluster.INSTALL}")


def _postgres_home(root: Path) -> Path:
    """As root the server runs as the service account, which may not reach `root` (under /root):
    its cluster then lives in a private temp dir that the account owns."""
    if os.geteuid() == 0:
        return Path(tempfile.mkdtemp(prefix="mnist-team-pg-"))
    return root / "postgres"


def _s3_env(secret: Secrets) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": secret.s3_key_id, "AWS_SECRET_ACCESS_KEY": secret.s3_secret}


def _start_mlflow(root: Path, stack: Stack, secret: Secrets) -> local_servers.Pid:
    # Secrets reach the server through its environment, never its command line (`ps` shows it):
    # libpq reads PGPASSWORD, so the database URLs carry no password.
    env = {
        **_s3_env(secret),
        "PGPASSWORD": secret.postgres,
        "MLFLOW_BACKEND_STORE_URI": stack.postgres_url("mlflow"),
        "MLFLOW_S3_ENDPOINT_URL": stack.s3_endpoint,
        "MLFLOW_AUTH_ADMIN_PASSWORD": secret.admin,  # MLflow has no default admin password
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret.flask_key,
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_config(root, stack.postgres_url("auth"))),
    }
    return local_servers.start_mlflow(root, stack.mlflow_port, env, f"s3://{BUCKET}/artifacts")


def auth_config(root: Path, database: str) -> Path:
    """Accounts get what their roles grant (accounts.py), anything else READ; users and
    permissions stay with the admin."""
    path = root / "basic_auth.ini"
    path.write_text(
        f"[mlflow]\ndefault_permission = {accounts.DEFAULT_PERMISSION}\n"
        f"database_uri = {database}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    return path


def env_file(stack: Stack, secret: Secrets, account: str) -> str:
    """What a terminal sources to use the stack as `account`: MLflow, Optuna's storage and DVC's
    S3."""
    exports = {
        "MLFLOW_TRACKING_URI": stack.mlflow_url,
        "MLFLOW_TRACKING_USERNAME": account,
        "MLFLOW_TRACKING_PASSWORD": secret.accounts()[account],
        "OPTUNA_STORAGE": stack.postgres_url("optuna", secret.postgres),
        "TEAM_S3_ENDPOINT": stack.s3_endpoint,
        **_s3_env(secret),
    }
    return "".join(f"export {name}='{value}'\n" for name, value in exports.items())


def stop(root: Path) -> bool:
    """Stop the stack in `root` and delete its directory; False if there was none."""
    if not (root / "stack.json").exists():
        return False
    stack = load(root)
    _stop_servers(stack)
    shutil.rmtree(Path(stack.postgres_data).parent, ignore_errors=True)
    shutil.rmtree(root)
    return True


def _stop_servers(stack: Stack) -> None:
    for pid in stack.pids.values():
        local_servers.stop(pid)
    data = Path(stack.postgres_data)
    if data.is_dir() and postgres_cluster.is_running(data):
        postgres_cluster.stop(data)


def load(root: Path) -> Stack:
    state = files.read_json(root / "stack.json", fix=f"stop it by hand and delete {root}")
    pids = {name: local_servers.Pid(**pid) for name, pid in state.pop("pids").items()}
    return Stack(**state, pids=pids)


def report(root: Path, stack: Stack) -> str:
    up = {name: local_servers.is_alive(pid) for name, pid in stack.pids.items()}
    up["postgres"] = postgres_cluster.is_running(Path(stack.postgres_data))
    state = {name: "up" if alive else "DOWN" for name, alive in up.items()}
    return "\n".join(
        [
            f"PostgreSQL  127.0.0.1:{stack.postgres_port}  {state['postgres']:4}  "
            f"databases {', '.join(DATABASES)}",
            f"S3 (moto)   {stack.s3_endpoint}  {state['s3']:4}  bucket {BUCKET}",
            f"MLflow      {stack.mlflow_url}  {state['mlflow']:4}  basic auth, accounts "
            f"{accounts.MAINTAINER} (registers models), {accounts.MEMBER} (logs runs)",
            f"Use it in a terminal:  source {root}/env   (as {accounts.MAINTAINER}; teammates: "
            f"source {root}/{ENV_FILES[accounts.MEMBER]}; passwords stay in those files)",
        ]
    )
