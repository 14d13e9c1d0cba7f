"""Corrections: the collection's files, and `preprocess.feedback: evaluate | train` through a
real `dvc repro` on tiny data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from common import files
from conftest import dvc, git, room_for, update_params
from inference import feedback
from ml import config, data

MODEL = {"name": "digits", "version": "3"}


def corrections(count: int, seed: int = 0) -> list[feedback.Correction]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    return [feedback.Correction(image, int(i % 10), 0, MODEL) for i, image in enumerate(images)]


def test_a_collection_reads_back_as_the_images_and_labels_stored(tmp_path):
    collection = feedback.Collection(tmp_path / "corrections")
    stored = corrections(5)
    assert all(collection.add(entry) for entry in stored)
    images, labels = feedback.read_all(tmp_path / "corrections")
    by_label = {int(label): image for image, label in zip(images, labels, strict=True)}
    assert {entry.label: entry.image.tobytes() for entry in stored} == {
        label: image.tobytes() for label, image in by_label.items()
    }
    names = sorted(path.name for path in (tmp_path / "corrections").iterdir())
    assert len(names) == 10 and all(name[:24].isalnum() for name in names)  # digests only


def test_the_same_image_is_kept_once_and_the_cap_holds(tmp_path):
    collection = feedback.Collection(tmp_path, cap=2)
    first, second, third = corrections(3)
    assert collection.add(first) and not collection.add(first)
    assert collection.add(second)
    with pytest.raises(feedback.FeedbackError, match="holds 2 corrections, its limit"):
        collection.add(third)
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_an_unfinished_correction_is_not_read_and_a_damaged_one_is_named(tmp_path):
    collection = feedback.Collection(tmp_path)
    collection.add(corrections(1)[0])
    (tmp_path / ("f" * 24 + ".png")).write_bytes(b"an image whose JSON never came")
    assert len(feedback.read_all(tmp_path)[1]) == 1
    (record,) = tmp_path.glob("*.json")
    record.write_text("{broken")
    with pytest.raises(Exception, match=f"{record.name}: not readable JSON"):
        feedback.read_all(tmp_path)


def test_a_bare_off_from_yaml_1_1_means_off():
    assert config.PreprocessParams(val_size=50, scale="unit", feedback=False).feedback == "off"


def test_feedback_is_evaluated_as_its_own_slice_then_trained_on_through_dvc_repro(project, mirror):
    git(project, "init", "-q")
    dvc(project, "init", "-q")
    # Synthetic digits stand in for fetch's output (fetch verifies the published MNIST).
    shutil.copytree(mirror[0], project / "data" / "raw")
    dvc(project, "commit", "-f", "fetch")
    collection = feedback.Collection(project / "data" / "feedback" / "corrections")
    for entry in corrections(6, seed=1):
        collection.add(entry)
    processed, metrics = project / "data" / "processed", project / "reports" / "eval"

    update_params(project, {"preprocess": {"feedback": "evaluate"}})
    out = dvc(project, "repro")
    scores = json.loads((metrics / "metrics.json").read_text())
    assert scores["feedback_images"] == 6 and 0 <= scores["feedback_accuracy"] <= 1
    assert "feedback slice: accuracy" in out and "collected corrections" in out
    mnist_only = len(data.load_split(processed / "train.npz"))
    assert len(data.load_split(processed / "feedback.npz")) == 6

    update_params(project, {"preprocess": {"feedback": "train"}})
    dvc(project, "repro")
    trained_on = data.load_split(processed / "train.npz")
    assert len(trained_on) == mnist_only + 6
    assert sorted(trained_on.y[-6:].tolist()) == sorted(e.label for e in corrections(6, seed=1))
    assert json.loads((metrics / "metrics.json").read_text())["feedback_images"] == 6

    update_params(project, {"preprocess": {"feedback": "off"}})
    dvc(project, "repro")
    assert len(data.load_split(processed / "feedback.npz")) == 0
    assert "feedback_images" not in json.loads((metrics / "metrics.json").read_text())


def test_a_full_disk_leaves_only_whole_corrections(tmp_path):
    """Corrections until the file system is full: each stored one is whole (its image and its
    record), the failing one leaves no record, and the collection still reads."""
    folder = tmp_path / "corrections"
    folder.mkdir()
    with room_for(folder, spare=24_000):
        collection = feedback.Collection(folder)
        with pytest.raises(files.DiskFullError, match="no space left on the file system at"):
            for entry in corrections(500):
                collection.add(entry)
        records = sorted(folder.glob("*.json"))
        assert records and all(record.with_suffix(".png").is_file() for record in records)
        images, labels = feedback.read_all(folder)
        assert len(images) == len(labels) == len(records)
        assert not list(folder.glob(".*"))  # no temp file left behind
