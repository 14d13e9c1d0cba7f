"""fetch: sources in order, digest-verified, atomic; one clear error when nothing works."""

from __future__ import annotations

import gzip
import http.server
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import closed_port_url, run_stage, serving, update_params
from ml import download
from mnist_fakes import idx_bytes

LIMITS = download.Limits(timeout_s=5, deadline_s=60, min_rate_bps=0)


def fetch_into(
    dest: Path, locations: list[str], digests: dict[str, str], limits: download.Limits = LIMITS
) -> None:
    download.fetch_all([download.Source(loc) for loc in locations], dest, digests, 1, limits)


def test_fetch_copies_every_file_from_a_local_mirror(tmp_path, mirror):
    directory, digests = mirror
    fetch_into(tmp_path / "raw", [str(directory)], digests)
    for name in digests:
        assert (tmp_path / "raw" / f"{name}.gz").read_bytes() == (
            directory / f"{name}.gz"
        ).read_bytes()


def test_fetch_downloads_from_an_http_mirror(tmp_path, mirror, http_mirror):
    fetch_into(tmp_path / "raw", [http_mirror], mirror[1])
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == sorted(
        f"{n}.gz" for n in mirror[1]
    )


def test_fetch_falls_through_an_unreachable_mirror_to_the_next(tmp_path, mirror, http_mirror):
    fetch_into(
        tmp_path / "raw", [closed_port_url(), str(tmp_path / "absent"), http_mirror], mirror[1]
    )
    assert len(list((tmp_path / "raw").glob("*.gz"))) == 4


def test_fetch_skips_a_file_already_present_and_valid(tmp_path, mirror, capsys):
    directory, digests = mirror
    fetch_into(tmp_path / "raw", [str(directory)], digests)
    fetch_into(tmp_path / "raw", [str(tmp_path / "no-such-mirror")], digests)  # would fail if used
    assert capsys.readouterr().out.count("already present and verified") == 4


def test_fetch_replaces_a_corrupt_local_file(tmp_path, mirror):
    directory, digests = mirror
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"<html>404</html>")
    fetch_into(raw, [str(directory)], digests)
    assert download.is_valid(
        raw / "t10k-labels-idx1-ubyte.gz",
        "t10k-labels-idx1-ubyte",
        digests["t10k-labels-idx1-ubyte"],
    )


def test_fetch_rejects_wrong_digest_and_keeps_no_file(tmp_path, mirror):
    directory, digests = mirror
    wrong = dict(digests, **{"train-labels-idx1-ubyte": "0" * 64})
    with pytest.raises(download.FetchError) as err:
        fetch_into(tmp_path / "raw", [str(directory)], wrong)
    message = str(err.value)
    assert "train-labels-idx1-ubyte.gz" in message
    assert "expected " + "0" * 64 in message
    assert digests["train-labels-idx1-ubyte"] in message  # the digest we got
    assert not (tmp_path / "raw" / "train-labels-idx1-ubyte.gz").exists()


def test_fetch_rejects_truncated_gzip(tmp_path, mirror):
    directory, digests = mirror
    path = directory / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(download.FetchError, match="not a complete gzip file"):
        fetch_into(tmp_path / "raw", [str(directory)], digests)
    assert not (tmp_path / "raw" / "train-images-idx3-ubyte.gz").exists()


def test_fetch_rejects_an_empty_file(tmp_path, mirror):
    directory, digests = mirror
    (directory / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b""))
    with pytest.raises(download.FetchError, match=r"wrong IDX magic \(empty\)"):
        fetch_into(tmp_path / "raw", [str(directory)], digests)


def test_fetch_rejects_wrong_idx_magic(tmp_path, mirror):
    directory, digests = mirror
    labels_as_images = idx_bytes(np.zeros((10, 28, 28), dtype=np.uint8))
    (directory / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels_as_images))
    with pytest.raises(download.FetchError, match="wrong IDX magic 00000803, expected 00000801"):
        fetch_into(tmp_path / "raw", [str(directory)], digests)


def test_fetch_rejects_idx_shorter_than_its_header_promises(tmp_path, mirror):
    directory, digests = mirror
    raw = gzip.decompress((directory / "t10k-images-idx3-ubyte.gz").read_bytes())
    (directory / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-784]))
    with pytest.raises(download.FetchError, match="but its IDX header promises"):
        fetch_into(tmp_path / "raw", [str(directory)], digests)


def test_mnist_mirror_env_comes_before_the_configured_mirrors():
    sources = download.sources_from({"MNIST_MIRROR": "/mnt/mnist"}, ["https://a/", "https://b/"])
    assert [s.location for s in sources] == ["/mnt/mnist", "https://a/", "https://b/"]
    assert [s.location for s in download.sources_from({}, ["https://a/"])] == ["https://a/"]


def test_fetch_cli_names_every_source_and_the_fix_when_nothing_is_reachable(project):
    dead = closed_port_url()
    update_params(project, {"fetch": {"mirrors": [dead], "retries": 0}})
    result = run_stage(project, "fetch", env={"MNIST_MIRROR": str(project / "nowhere")})
    assert result.returncode == 1
    assert result.stderr.startswith("error: could not get a valid train-images-idx3-ubyte.gz")
    assert str(project / "nowhere") in result.stderr
    assert dead in result.stderr
    assert "MNIST_MIRROR" in result.stderr and "Traceback" not in result.stderr
    raw = project / "data" / "raw"
    assert not raw.exists() or not any(raw.iterdir())


def test_a_damaged_deflate_stream_is_rejected_and_the_next_source_used(tmp_path, mirror):
    directory, digests = mirror
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for path in directory.iterdir():
        blob = bytearray(path.read_bytes())
        blob[len(blob) // 2 : len(blob) // 2 + 8] = b"\xff" * 8  # inside the deflate stream
        (damaged / path.name).write_bytes(bytes(blob))
    fetch_into(tmp_path / "raw", [str(damaged), str(directory)], digests)
    for name in digests:
        assert download.is_valid(tmp_path / "raw" / f"{name}.gz", name, digests[name])


TRICKLED = np.random.default_rng(0).bytes(64_000)  # incompressible: it arrives in many pieces


class SteppingClock:
    """Each reading is `step` seconds after the last: a download as slow as a test needs."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def trickling_mirror(tmp_path: Path) -> Iterator[str]:
    """An HTTP mirror whose one file arrives in many small writes, as from a slow server."""
    body = TRICKLED

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                for start in range(0, len(body), 256):
                    self.wfile.write(body[start : start + 256])
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, as the test wants: no traceback in the test log

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving(Trickle) as url:
        yield url


def test_a_download_past_its_deadline_is_given_up(trickling_mirror):
    limits = download.Limits(timeout_s=5, deadline_s=30, min_rate_bps=0, clock=SteppingClock(10))
    with pytest.raises(download.FetchError, match=r"past the 30 s deadline \(fetch.deadline_s\)"):
        download.Source(trickling_mirror).get("any.gz", download.make_session(0), limits)


def test_a_mirror_below_the_minimum_rate_is_given_up(trickling_mirror):
    limits = download.Limits(timeout_s=5, deadline_s=1e9, min_rate_bps=1e6, clock=SteppingClock(10))
    with pytest.raises(download.FetchError, match=r"bytes/s after 10 s, below fetch.min_rate_bps"):
        download.Source(trickling_mirror).get("any.gz", download.make_session(0), limits)


def test_within_its_limits_the_same_slow_mirror_is_used(trickling_mirror):
    limits = download.Limits(timeout_s=5, deadline_s=1e9, min_rate_bps=1, clock=SteppingClock(1))
    assert (
        download.Source(trickling_mirror).get("any", download.make_session(0), limits) == TRICKLED
    )


def test_a_short_download_is_reported_as_that_sources_own_error(tmp_path, mirror):
    """A server that promises more bytes than it sends: its line says so, whatever comes next."""

    class Short(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"\x1f\x8b" + b"\0" * 500)

        def log_message(self, format: str, *args: object) -> None:
            pass

    name = "t10k-labels-idx1-ubyte"
    with serving(Short) as short, pytest.raises(download.FetchError) as err:
        fetch_into(tmp_path / "raw", [short, str(tmp_path / "absent")], {name: mirror[1][name]})
    lines = str(err.value).splitlines()
    assert lines[1].startswith(f"  {short}: ") and "ChunkedEncodingError" in lines[1]
    assert lines[2].startswith(f"  {tmp_path / 'absent'}: ")
