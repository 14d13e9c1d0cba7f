"""preprocess: a stratified, seeded validation split; scaling; summary; outputs on disk."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from conftest import run_stage
from ml import data
from mnist_fakes import synthetic_digits


@pytest.fixture
def full() -> data.Split:
    images, labels = synthetic_digits(1000, seed=3)
    return data.Split(images[..., np.newaxis], labels)


def test_validation_split_is_stratified_disjoint_and_complete(full):
    splits = data.carve_validation(full, val_size=200, seed=7)
    assert len(splits.val) == 200 and len(splits.train) == 800
    assert np.bincount(splits.val.y).tolist() == [20] * 10  # 10% of each digit
    rows = {row.tobytes() for row in np.concatenate([splits.train.x, splits.val.x])}
    assert len(rows) == 1000  # every image exactly once


def test_validation_split_depends_only_on_the_seed(full):
    first, again = (data.carve_validation(full, 200, seed=7) for _ in range(2))
    other = data.carve_validation(full, 200, seed=8)
    assert np.array_equal(first.val.x, again.val.x)
    assert not np.array_equal(first.val.x, other.val.x)


def test_standardize_scaling_gives_zero_mean_unit_variance(full):
    scale = data.scaling(full, "standardize")
    scaled = full.x * scale.scale + scale.offset
    assert scaled.mean() == pytest.approx(0, abs=1e-6)
    assert scaled.std() == pytest.approx(1, abs=1e-6)
    assert data.scaling(full, "unit") == data.Scaling(scale=1 / 255, offset=0.0)


def test_preprocess_stage_writes_splits_summary_and_sample_grid(project, mirror):
    (project / "data").mkdir(exist_ok=True)
    (project / "data" / "raw").symlink_to(mirror[0])
    result = run_stage(project, "preprocess")
    assert result.returncode == 0, result.stderr
    processed = project / "data" / "processed"
    assert [len(data.load_split(processed / f"{n}.npz")) for n in ("train", "val", "test")] == [
        250,
        50,
        100,
    ]
    summary = json.loads((project / "reports" / "preprocess" / "summary.json").read_text())
    assert summary["val"] == {"total": 50} | {str(d): 5 for d in range(10)}
    assert (project / "reports" / "preprocess" / "samples.png").read_bytes()[:4] == b"\x89PNG"


def test_preprocess_stage_says_to_fetch_when_raw_data_is_missing(project):
    result = run_stage(project, "preprocess")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert "train-images-idx3-ubyte.gz" in result.stderr and "Traceback" not in result.stderr


def test_a_saved_split_has_no_fields_that_differ_between_python_releases(tmp_path):
    """A forced zip64 entry's version fields changed in CPython 3.11.4 (45, 20 before): a split
    saved with them is other bytes on another 3.11, and a fresh clone's dvc.lock changes."""
    split = data.Split(np.arange(784 * 3, dtype=np.uint8).reshape(3, 28, 28, 1), np.arange(3))
    data.save_split(tmp_path / "split.npz", split)
    with zipfile.ZipFile(tmp_path / "split.npz") as archive:
        for entry in archive.infolist():
            assert (entry.create_version, entry.extract_version, entry.extra) == (20, 20, b"")
    loaded = data.load_split(tmp_path / "split.npz")
    np.testing.assert_array_equal(loaded.x, split.x)
    np.testing.assert_array_equal(loaded.y, split.y)
