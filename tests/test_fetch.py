"""fetch: sources in order, digest-verified, atomic; one clear error when nothing works."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

import fetch
from conftest import closed_port_url, run_stage, update_params
from mnist_fakes import idx_bytes


def fetch_into(dest: Path, locations: list[str], digests: dict[str, str]) -> None:
    fetch.fetch_all([fetch.Source(loc) for loc in locations], dest, digests, retries=1, timeout_s=5)


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
    assert fetch.is_valid(
        raw / "t10k-labels-idx1-ubyte.gz",
        "t10k-labels-idx1-ubyte",
        digests["t10k-labels-idx1-ubyte"],
    )


def test_fetch_rejects_wrong_digest_and_keeps_no_file(tmp_path, mirror):
    directory, digests = mirror
    wrong = dict(digests, **{"train-labels-idx1-ubyte": "0" * 64})
    with pytest.raises(fetch.FetchError) as err:
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
    with pytest.raises(fetch.FetchError, match="not a complete gzip file"):
        fetch_into(tmp_path / "raw", [str(directory)], digests)
    assert not (tmp_path / "raw" / "train-images-idx3-ubyte.gz").exists()


def test_fetch_rejects_an_empty_file(tmp_path, mirror):
    directory, digests = mirror
    (directory / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b""))
    with pytest.raises(fetch.FetchError, match=r"wrong IDX magic \(empty\)"):
        fetch_into(tmp_path / "raw", [str(directory)], digests)


def test_fetch_rejects_wrong_idx_magic(tmp_path, mirror):
    directory, digests = mirror
    labels_as_images = idx_bytes(np.zeros((10, 28, 28), dtype=np.uint8))
    (directory / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels_as_images))
    with pytest.raises(fetch.FetchError, match="wrong IDX magic 00000803, expected 00000801"):
        fetch_into(tmp_path / "raw", [str(directory)], digests)


def test_fetch_rejects_idx_shorter_than_its_header_promises(tmp_path, mirror):
    directory, digests = mirror
    raw = gzip.decompress((directory / "t10k-images-idx3-ubyte.gz").read_bytes())
    (directory / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-784]))
    with pytest.raises(fetch.FetchError, match="but its IDX header promises"):
        fetch_into(tmp_path / "raw", [str(directory)], digests)


def test_mnist_mirror_env_comes_before_the_configured_mirrors():
    sources = fetch.sources_from({"MNIST_MIRROR": "/mnt/mnist"}, ["https://a/", "https://b/"])
    assert [s.location for s in sources] == ["/mnt/mnist", "https://a/", "https://b/"]
    assert [s.location for s in fetch.sources_from({}, ["https://a/"])] == ["https://a/"]


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
