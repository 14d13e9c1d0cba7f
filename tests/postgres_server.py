"""A throwaway PostgreSQL server for the team tests: the machine's own binaries (Debian's
`postgresql` package; .ci/run installs it), a fresh cluster in a temp dir, 127.0.0.1 on a free
port, password authentication, stopped and removed on exit."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import free_port

USER = "team"
SERVICE_ACCOUNT = "postgres"  # PostgreSQL refuses to run as root; Debian's package makes this one


def bin_dir() -> Path | None:
    """Where pg_ctl and initdb are: on PATH, else Debian's versioned directory (newest)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=_version)
    return versions[-1].parent if versions else None


def _version(pg_ctl: Path) -> int:
    return int(pg_ctl.parent.parent.name)


@contextmanager
def running(password: str, databases: tuple[str, ...] = ()) -> Iterator[str]:
    """Start a server with `databases` created; yield its URL
    (postgresql://team:<password>@127.0.0.1:<port>/postgres; another database: replace the
    path)."""
    binaries = bin_dir()
    if binaries is None:
        raise RuntimeError("no PostgreSQL server binaries: apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="pg-"))  # under /tmp: the service account can reach it
    as_owner = _as_service_account(root)
    (root / "pw").write_text(password)
    _chown_to_service_account(root / "pw")
    port = free_port()
    try:
        _run([*as_owner, binaries / "initdb", "-D", root / "data", "-U", USER, "-A",
              "scram-sha-256", "--pwfile", root / "pw", "-E", "UTF8"])  # fmt: skip
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {root}"
        _run([*as_owner, binaries / "pg_ctl", "-D", root / "data", "-l", root / "log", "-w",
              "-o", options, "start"])  # fmt: skip
        for database in databases:
            _run([*as_owner, binaries / "createdb", "-h", root, "-p", port, "-U", USER,
                  database], env={**os.environ, "PGPASSWORD": password})  # fmt: skip
        try:
            yield f"postgresql://{USER}:{password}@127.0.0.1:{port}/postgres"
        finally:
            _run([*as_owner, binaries / "pg_ctl", "-D", root / "data", "-m", "immediate", "-w",
                  "stop"])  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _as_service_account(root: Path) -> list[str]:
    """As root: run the server as the service account, which must own its directory."""
    if os.geteuid() != 0:
        return []
    _chown_to_service_account(root)
    return ["runuser", "-u", SERVICE_ACCOUNT, "--"]


def _chown_to_service_account(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, SERVICE_ACCOUNT, SERVICE_ACCOUNT)


def _run(command: list, env: dict[str, str] | None = None) -> None:
    subprocess.run([str(part) for part in command], check=True, capture_output=True, env=env)
