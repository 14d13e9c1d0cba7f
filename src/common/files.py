"""Atomic file output (a killed or failed stage never leaves a half-written file behind) and
JSON input that fails with one clear line."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common.errors import PipelineError, translator

# What a write fails with when the disk (or the user's quota, or `ulimit -f`) has no room.
FULL = {
    errno.ENOSPC: "no space left on the file system",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file is over this process's size limit (ulimit -f)",
}


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temp path beside `target`; rename it onto `target` only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=target.suffix
    )
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes the file private (0600); the target gets the mode open() would give it, so
    # a teammate or a serving account can read data and models as the umask allows.
    tmp.chmod(0o666 & ~current_umask())
    try:
        yield tmp
        tmp.replace(target)
    except Exception as err:
        full = full_cause(err)
        if full is None:
            raise
        raise DiskFullError(full, target) from err
    finally:
        tmp.unlink(missing_ok=True)


def current_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; set it straight back
    os.umask(mask)
    return mask


def write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_private(target: Path, text: str) -> None:
    """Write secrets: readable by the owner only, from the first byte on (mkstemp's 0600)."""
    with atomic_path(target) as tmp:
        tmp.chmod(0o600)
        tmp.write_text(text)


def write_json(target: Path, obj: Any) -> None:
    write_bytes(target, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_figure(fig: Any, target: Path) -> None:
    """Save a matplotlib Figure atomically; the temp file keeps the suffix that picks the format."""
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")


def read_json(path: Path, fix: str) -> Any:
    """Parse a JSON file a stage wrote; a missing, unreadable or corrupt one names `fix`."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise PipelineError(f"{path} is missing: {fix}") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PipelineError(f"{path}: not readable JSON ({err}); {fix}") from err


# Folders libraries write to for this process (MLflow's artifacts): their errors may name no file.
_library_outputs: list[Path] = []
# Free bytes below which a file system counts as the full one.
NEARLY_FULL = 1_000_000


def library_writes_to(folder: Path) -> None:
    """Name a folder a library writes to, so a full disk there is named when it says nothing."""
    _library_outputs.append(folder)


class DiskFullError(PipelineError):
    """A write found no room; the message names the file system and the file."""

    def __init__(self, cause: OSError, target: Path | None = None) -> None:
        written = target or (Path(cause.filename) if cause.filename else None)
        where = f" at {mount_point(written)} (writing {written})" if written else ""
        if written is None and (full := nearly_full(_library_outputs)) is not None:
            where = f" at {mount_point(full)} (writing under {full})"
        super().__init__(
            f"{FULL[cause.errno]}{where}: free some space there and rerun the stage; no file "
            f"was left half-written"
        )


def full_cause(err: BaseException) -> OSError | None:
    """The OSError saying there is no room, however deep a library wrapped it."""
    cause: BaseException | None = err
    while cause is not None and not (isinstance(cause, OSError) and cause.errno in FULL):
        cause = cause.__cause__ or cause.__context__
    return cause if isinstance(cause, OSError) else None


def nearly_full(folders: list[Path]) -> Path | None:
    return next(
        (f for f in folders if f.is_dir() and shutil.disk_usage(f).free < NEARLY_FULL), None
    )


def mount_point(path: Path) -> Path:
    path = path.absolute()
    while not path.is_mount() and path != path.parent:
        path = path.parent
    return path


@translator
def file_system_full(err: Exception) -> PipelineError | None:
    """A write outside atomic_path (a library's own, MLflow's artifact copy) that found no room.
    The atomic writes left every file whole: freeing space and rerunning is all there is to do."""
    full = full_cause(err)
    return None if full is None else DiskFullError(full)
