"""Downloading MNIST: sources tried in order (a local directory or a mirror's URL), each file
streamed within time and rate limits, retried with backoff, and kept only when the digest of its
decompressed content is the published one."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.util.retry import Retry

from common import files
from common.errors import PipelineError
from ml import data

# SHA-256 of each *decompressed* file, as published for the official MNIST files. Checking the
# decompressed bytes (not the .gz) accepts any faithful recompression, e.g. a local mirror's.
OFFICIAL_DIGESTS = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MIRROR_ENV = "MNIST_MIRROR"


class FetchError(PipelineError):
    """No source gave a valid copy of a file."""


@dataclass(frozen=True)
class Limits:
    """How long one file's download may take. timeout_s bounds each connect and each silent
    read; deadline_s the whole file; a download still below min_rate_bps (average bytes/s) once
    timeout_s has passed is given up, so a mirror that trickles cannot hold a run for hours."""

    timeout_s: float
    deadline_s: float
    min_rate_bps: float
    clock: Callable[[], float] = time.monotonic

    def check(self, url: str, received: int, started: float) -> None:
        elapsed = self.clock() - started
        if elapsed > self.deadline_s:
            raise FetchError(
                f"{url}: {received} bytes in {elapsed:.0f} s, past the {self.deadline_s:.0f} s "
                f"deadline (fetch.deadline_s)"
            )
        if elapsed > self.timeout_s and received / elapsed < self.min_rate_bps:
            raise FetchError(
                f"{url}: {received / elapsed:.0f} bytes/s after {elapsed:.0f} s, below "
                f"fetch.min_rate_bps ({self.min_rate_bps:.0f})"
            )


@dataclass(frozen=True)
class Source:
    """A local directory or a base URL that holds the four `<name>.gz` files."""

    location: str

    def get(self, filename: str, session: requests.Session, limits: Limits) -> bytes:
        if "://" not in self.location:
            path = Path(self.location) / filename
            if not path.is_file():
                raise FetchError(f"{path} does not exist")
            return path.read_bytes()
        return _download(f"{self.location.rstrip('/')}/{filename}", session, limits)


def _download(url: str, session: requests.Session, limits: Limits) -> bytes:
    """Stream one URL with a progress bar; HTTP errors, short reads and a download past its
    limits become FetchError."""
    started = limits.clock()
    try:
        with session.get(url, stream=True, timeout=limits.timeout_s) as response:
            response.raise_for_status()
            size = int(response.headers.get("content-length", 0)) or None
            chunks = []
            with tqdm(
                total=size,
                unit="B",
                unit_scale=True,
                desc=url.rsplit("/", 1)[-1],
                leave=False,
                file=sys.stderr,
            ) as bar:
                # Small chunks: the limits are checked while a slow mirror trickles (at the
                # default min_rate_bps, at least every 0.4 s). chunk_size=None would read to EOF.
                for chunk in response.iter_content(chunk_size=1 << 13):
                    chunks.append(chunk)
                    bar.update(len(chunk))
                    limits.check(url, bar.n, started)
    except requests.RequestException as err:
        raise FetchError(f"{url}: {type(err).__name__}: {err}") from err
    return b"".join(chunks)


def make_session(retries: int) -> requests.Session:
    """A session that retries refused connections and 5xx answers with exponential backoff."""
    retry = Retry(
        total=retries,
        backoff_factor=0.5,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=("GET",),
        raise_on_status=False,
    )
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


def verify(blob: bytes, name: str, expected: str) -> None:
    """Accept only a complete gzip whose decompressed IDX content has the expected digest."""
    raw = data.gunzip(blob, f"{name}.gz")
    data.parse_idx(raw, f"{name}.gz", rank=3 if "images" in name else 1)
    got = data.sha256(raw)
    if got != expected:
        raise data.DataError(f"{name}.gz: SHA-256 of its content is {got}, expected {expected}")


def is_valid(path: Path, name: str, expected: str) -> bool:
    try:
        verify(path.read_bytes(), name, expected)
    except (OSError, data.DataError):
        return False
    return True


def fetch_file(
    name: str,
    expected: str,
    sources: list[Source],
    dest: Path,
    session: requests.Session,
    limits: Limits,
) -> str:
    """Put a verified `<name>.gz` in dest from the first source that has one; return that source."""
    failures = []
    for source in sources:
        try:
            blob = source.get(f"{name}.gz", session, limits)
            verify(blob, name, expected)
        except PipelineError as err:
            failures.append(f"  {source.location}: {err}")
            continue
        files.write_bytes(dest / f"{name}.gz", blob)
        return source.location
    tried = "\n".join(failures)
    raise FetchError(
        f"could not get a valid {name}.gz from any source:\n{tried}\n"
        f"Offline? Point {MIRROR_ENV} at a directory (or base URL) with the four MNIST .gz files, "
        f"e.g. `{MIRROR_ENV}=../shared/mnist dvc repro`."
    )


def fetch_all(
    sources: list[Source], dest: Path, digests: dict[str, str], retries: int, limits: Limits
) -> None:
    """Ensure every file in `digests` is in dest and valid, skipping those already there."""
    session = make_session(retries)
    for name, expected in digests.items():
        if is_valid(dest / f"{name}.gz", name, expected):
            print(f"{name}.gz: already present and verified")
            continue
        origin = fetch_file(name, expected, sources, dest, session, limits)
        print(f"{name}.gz: verified, from {origin}")


def sources_from(env: dict[str, str], mirrors: list[str]) -> list[Source]:
    """$MNIST_MIRROR first when set (the offline path), then the configured public mirrors."""
    first = [env[MIRROR_ENV]] if env.get(MIRROR_ENV) else []
    return [Source(location) for location in first + mirrors]
