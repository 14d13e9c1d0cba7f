"""predict: user images -> MNIST format -> digits; one error line per bad file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import morphology

import predict
from common.errors import PipelineError
from conftest import SHARED_MNIST
from inference import imaging, paper
from ml import config, data, model
from mnist_fakes import synthetic_digits
from user_files import as_user_png


@pytest.fixture(scope="module")
def mnist_test() -> data.Split:
    """Real test digits (tests that use them are marked slow, which means real MNIST); skipped,
    saying why, where ../shared and $MNIST_MIRROR have none."""
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"needs real MNIST in {SHARED_MNIST} (or $MNIST_MIRROR)")
    return data.read_pair(SHARED_MNIST, "t10k")


@pytest.mark.slow
@pytest.mark.parametrize(("size", "dark_on_light"), [((151, 97), True), ((64, 203), False)])
def test_a_user_png_converts_back_to_its_mnist_digit(tmp_path, mnist_test, size, dark_on_light):
    for index in range(10):
        original = mnist_test.x[index]
        as_user_png(original, tmp_path / "digit.png", size, dark_on_light)
        recovered = imaging.to_mnist(tmp_path / "digit.png")
        assert recovered.shape == (28, 28, 1) and recovered.dtype == np.uint8
        correlation = np.corrcoef(original.ravel(), recovered.ravel().astype(float))[0, 1]
        # Not 1: the stroke core is saturated as in MNIST, and edges re-sampled twice.
        assert correlation > 0.7, f"digit {index}: correlation {correlation:.2f}"


def test_a_blank_image_is_reported_as_holding_no_digit(tmp_path):
    Image.new("L", (40, 40), 255).save(tmp_path / "blank.png")
    with pytest.raises(imaging.ImageError, match="no digit found"):
        imaging.to_mnist(tmp_path / "blank.png")


def bold_seven(width: int) -> np.ndarray:
    """A paint-program 7, black on white, strokes `width` of 280 px wide."""
    page = np.full((280, 280), 255.0)
    page[40 : 40 + width, 50:230] = 0  # the bar
    for row in range(40, 250):  # the slanted stem
        column = int(230 - (row - 40) * 0.5)
        page[row, column - width // 2 : column + width // 2] = 0
    return page


@pytest.mark.parametrize("width", [20, 50])
def test_bold_strokes_come_out_solid_not_hollow(width):
    page = bold_seven(width)
    strength = paper.strokes(page)
    inside = morphology.erosion(page == 0, morphology.disk(3))  # the edges are blurred
    assert strength[inside].min() > 0.9 * strength.max()


def test_paper_lit_unevenly_is_not_taken_for_flat():
    page = bold_seven(20) * np.linspace(0.6, 1.0, 280)  # light falling off to one side
    assert paper.is_flat(bold_seven(20)) and not paper.is_flat(page)


def a_digit() -> np.ndarray:
    """A synthetic 28x28 digit: these tests need a drawable image, not a real one."""
    images, _ = synthetic_digits(1, seed=0)
    return images[0][..., np.newaxis]


def test_predict_answers_in_input_order_naming_the_model_and_each_bad_file(tmp_path, capsys):
    cnn = model.build_cnn(config.ModelSpec(blocks=[config.ConvBlock(filters=2)]))
    cnn.save(tmp_path / "tiny.keras")
    as_user_png(a_digit(), tmp_path / "good.png", (90, 90), dark_on_light=True)
    (tmp_path / "notes.png").write_text("not an image")
    Image.new("L", (30, 30), 0).save(tmp_path / "empty.png")
    names = ("notes.png", "good.png", "missing.png", "empty.png")
    files = [str(tmp_path / name) for name in names]
    status = predict.main([*files, "--model", str(tmp_path / "tiny.keras")])
    out, err = capsys.readouterr()
    assert status == 1
    lines = out.splitlines()
    assert lines[0] == f"model: {tmp_path / 'tiny.keras'}"
    assert len(lines) == 2 and lines[1].startswith(f"{tmp_path / 'good.png'}: ")
    errors = err.splitlines()
    assert [line.split(": ")[1] for line in errors] == [files[0], files[2], files[3]]
    assert "not an image" in errors[0] and errors[1].endswith("missing.png: not found")
    assert "no digit found" in errors[2]


def test_predict_json_holds_the_model_and_every_file_in_order(tmp_path, capsys):
    cnn = model.build_cnn(config.ModelSpec(blocks=[config.ConvBlock(filters=2)]))
    cnn.save(tmp_path / "tiny.keras")
    as_user_png(a_digit(), tmp_path / "good.png", (90, 90), dark_on_light=False)
    files = [str(tmp_path / "missing.png"), str(tmp_path / "good.png")]
    assert predict.main([*files, "--json", "--model", str(tmp_path / "tiny.keras")]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == str(tmp_path / "tiny.keras") and report["version"] is None
    assert [entry["file"] for entry in report["files"]] == files
    assert "not found" in report["files"][0]["error"]
    answer = report["files"][1]
    assert 0 <= answer["digit"] <= 9 and abs(sum(answer["probabilities"]) - 1) < 1e-3


def test_explain_saves_one_figure_per_readable_image_without_overwriting(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(predict, "EXPLAIN_DIR", tmp_path / "explained")
    cnn = model.build_cnn(config.ModelSpec(blocks=[config.ConvBlock(filters=2)]))
    cnn.save(tmp_path / "tiny.keras")
    (tmp_path / "other").mkdir()
    for folder in (tmp_path, tmp_path / "other"):
        as_user_png(a_digit(), folder / "digit.png", (90, 90), dark_on_light=True)
    files = [str(tmp_path / "digit.png"), str(tmp_path / "missing.png")]
    files.append(str(tmp_path / "other" / "digit.png"))
    args = [*files, "--explain", "--json", "--model", str(tmp_path / "tiny.keras")]
    assert predict.main(args) == 1
    entries = json.loads(capsys.readouterr().out)["files"]
    explained = [entry.get("explanation") for entry in entries]
    assert explained == [
        str(tmp_path / "explained" / "digit.png"),
        None,
        str(tmp_path / "explained" / "digit-2.png"),
    ]
    for figure in (explained[0], explained[2]):
        assert Path(figure).read_bytes()[:4] == b"\x89PNG"


def test_two_digits_side_by_side_are_named_not_guessed(tmp_path):
    digit = a_digit()[..., 0]
    pair = np.hstack([digit, np.zeros((28, 14), np.uint8), digit])
    Image.fromarray(255 - np.pad(pair, 10)).resize((280, 96)).save(tmp_path / "pair.png")
    with pytest.raises(imaging.ImageError, match="2 digits side by side found"):
        imaging.to_mnist(tmp_path / "pair.png")


def test_predict_explains_a_missing_model(tmp_path):
    as_user_png(a_digit(), tmp_path / "good.png", (90, 90), dark_on_light=False)
    with pytest.raises(PipelineError, match="Run `dvc repro` to train and register one"):
        predict.main([str(tmp_path / "good.png"), "--model", "models:/nothing@champion"])
