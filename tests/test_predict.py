"""predict: user images -> MNIST format -> digits; one error line per bad file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import config
import data
import imaging
import model
import predict
from conftest import SHARED_MNIST
from mnist_fakes import synthetic_digits


@pytest.fixture(scope="module")
def mnist_test() -> data.Split:
    """Real test digits; skipped (-ra shows it) where ../shared and $MNIST_MIRROR have none."""
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"needs real MNIST in {SHARED_MNIST} (or $MNIST_MIRROR)")
    return data.read_pair(SHARED_MNIST, "t10k")


def as_user_png(digit: np.ndarray, path, size: tuple[int, int], dark_on_light: bool) -> None:
    """Render an MNIST digit the way a user's file might look: bigger, off-centre, either way."""
    side = min(size) * 2 // 3
    big = Image.fromarray(digit.squeeze()).resize((side, side), Image.Resampling.BILINEAR)
    canvas = Image.new("L", size, 0)
    canvas.paste(big, ((size[0] - side) // 4, (size[1] - side) // 3))
    pixels = np.asarray(canvas)
    Image.fromarray(255 - pixels if dark_on_light else pixels).convert("RGB").save(path)


@pytest.mark.parametrize(("size", "dark_on_light"), [((151, 97), True), ((64, 203), False)])
def test_a_user_png_converts_back_to_its_mnist_digit(tmp_path, mnist_test, size, dark_on_light):
    for index in range(10):
        original = mnist_test.x[index]
        as_user_png(original, tmp_path / "digit.png", size, dark_on_light)
        recovered = imaging.to_mnist(tmp_path / "digit.png")
        assert recovered.shape == (28, 28, 1) and recovered.dtype == np.uint8
        correlation = np.corrcoef(original.ravel(), recovered.ravel().astype(float))[0, 1]
        assert correlation > 0.8, f"digit {index}: correlation {correlation:.2f}"


def test_a_blank_image_is_reported_as_holding_no_digit(tmp_path):
    Image.new("L", (40, 40), 255).save(tmp_path / "blank.png")
    with pytest.raises(imaging.ImageError, match="no digit found"):
        imaging.to_mnist(tmp_path / "blank.png")


def a_digit() -> np.ndarray:
    """A synthetic 28x28 digit: these tests need a drawable image, not a real one."""
    images, _ = synthetic_digits(1, seed=0)
    return images[0][..., np.newaxis]


def test_predict_reports_each_bad_file_and_still_predicts_the_others(tmp_path, capsys):
    cnn = model.build_cnn(config.ModelSpec(blocks=[config.ConvBlock(filters=2)]))
    cnn.save(tmp_path / "tiny.keras")
    as_user_png(a_digit(), tmp_path / "good.png", (90, 90), dark_on_light=True)
    (tmp_path / "notes.png").write_text("not an image")
    Image.new("L", (30, 30), 0).save(tmp_path / "empty.png")
    files = [tmp_path / name for name in ("notes.png", "good.png", "empty.png")]
    status = predict.main([*map(str, files), "--model", str(tmp_path / "tiny.keras")])
    out, err = capsys.readouterr()
    assert status == 1
    assert out.startswith(f"{tmp_path / 'good.png'}: ") and out.count("\n") == 1
    assert err.count("error: ") == 2
    assert "notes.png: not a readable image" in err and "empty.png: no digit found" in err


def test_predict_explains_a_missing_model(tmp_path, capsys):
    as_user_png(a_digit(), tmp_path / "good.png", (90, 90), dark_on_light=False)
    assert predict.main([str(tmp_path / "good.png"), "--model", "models:/nothing@champion"]) == 1
    assert "Run `dvc repro` to train and register one" in capsys.readouterr().err
