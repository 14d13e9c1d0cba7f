"""A PostgreSQL cluster of its own for the local team stack: the machine's server binaries
(Debian's `postgresql` package, Homebrew's, ...), one data directory, 127.0.0.1 only, password
authentication. Its owner stops it with `stop`; nothing else on the machine is touched."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from common import files
from common.errors import PipelineError

USER = "team"
SERVICE_ACCOUNT = "postgres"  # PostgreSQL refuses to run as root; Debian's package makes this one
INSTALL = "install PostgreSQL's server (Debian/Ubuntu: apt-get install postgresql)"


def bin_dir() -> Path | None:
    """Where pg_ctl and initdb are: on PATH, else Debian's versioned directory (newest)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=_version)
    return versions[-1].parent if versions else None


def _version(pg_ctl: Path) -> int:
    return int(pg_ctl.parent.parent.name)


def create(data: Path, port: int, password: str, databases: tuple[str, ...]) -> None:
    """initdb into `data` (which must not exist), start the server on 127.0.0.1:`port` and
    create `databases`, owned by USER."""
    binaries = _binaries()
    data.parent.mkdir(parents=True, exist_ok=True)
    password_file = data.parent / ".pg-password"
    files.write_private(password_file, password)  # the owner's alone from the first byte
    _give_to_service_account(data.parent, password_file)
    try:
        _run([binaries / "initdb", "-D", data, "-U", USER, "-A", "scram-sha-256",
              "--pwfile", password_file, "-E", "UTF8"])  # fmt: skip
    finally:
        password_file.unlink()
    start(data, port)
    for database in databases:
        _run([binaries / "createdb", "-h", "127.0.0.1", "-p", port, "-U", USER, database],
             env={**os.environ, "PGPASSWORD": password})  # fmt: skip


def start(data: Path, port: int) -> None:
    # TCP on loopback only, no Unix socket: its path would have to be short and writable.
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
    _run([_binaries() / "pg_ctl", "-D", data, "-l", data.parent / "postgres.log", "-w",
          "-o", options, "start"])  # fmt: skip


def stop(data: Path) -> None:
    """Stop the server at once (a throwaway cluster needs no clean checkpoint)."""
    _run([_binaries() / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"])


def is_running(data: Path) -> bool:
    status = subprocess.run(
        _as_owner([_binaries() / "pg_ctl", "-D", data, "status"]), capture_output=True, check=False
    )
    return status.returncode == 0


def _binaries() -> Path:
    found = bin_dir()
    if found is None:
        raise PipelineError(f"no PostgreSQL server binaries (pg_ctl) found: {INSTALL}")
    return found


def _give_to_service_account(*paths: Path) -> None:
    """As root the server runs as the service account, which must own its files."""
    if os.geteuid() == 0:
        for path in paths:
            shutil.chown(path, SERVICE_ACCOUNT, SERVICE_ACCOUNT)


def _as_owner(command: list) -> list[str]:
    prefix = ["runuser", "-u", SERVICE_ACCOUNT, "--"] if os.geteuid() == 0 else []
    return prefix + [str(part) for part in command]


def _run(command: list, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(_as_owner(command), capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        name = Path(str(command[0])).name
        raise PipelineError(f"PostgreSQL's {name} failed: {done.stderr.strip()[-500:]}")
