"""imaging: one digit in many pieces, small tight scans, big photos and bombs, uploaded bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from inference import imaging, paper

SIDE = 280


def page() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("L", (SIDE, SIDE), 255)
    return image, ImageDraw.Draw(image)


def four_in_two_strokes() -> Image.Image:
    """The `4` many people write: an open angle, then a separate down stroke to its right."""
    image, draw = page()
    draw.line([(120, 40), (70, 160), (180, 160)], fill=0, width=14)
    draw.line([(200, 60), (200, 250)], fill=0, width=14)
    return image


def eight_whose_loops_do_not_meet() -> Image.Image:
    image, draw = page()
    draw.ellipse((95, 30, 185, 120), outline=0, width=14)
    draw.ellipse((85, 140, 195, 250), outline=0, width=14)
    return image


def seven_with_a_crossbar() -> Image.Image:
    """A continental 7 whose crossbar, written after the lift of the pen, stops short of it."""
    image, draw = page()
    draw.line([(70, 40), (210, 40), (130, 250)], fill=0, width=14)
    draw.line([(110, 150), (150, 150)], fill=0, width=14)
    return image


def ink_rows(image: np.ndarray) -> int:
    return int(np.count_nonzero(image[..., 0].max(axis=1) > 64))


def extent(ink: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(ink)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


@pytest.mark.parametrize(
    "drawing", [four_in_two_strokes, eight_whose_loops_do_not_meet, seven_with_a_crossbar]
)
def test_a_digit_in_several_pieces_is_one_digit_with_all_its_ink(drawing):
    gray = np.asarray(drawing(), dtype=np.float32)
    pieces = imaging.measure.label(gray < 128).max()
    assert pieces >= 2, "the drawing must be in pieces to test anything"
    crop = imaging.crop_to_digit(gray, "digit.png")
    # The crop is the box around every piece: around one piece alone it would be smaller.
    height, width = extent(gray < 128)
    assert abs(crop.shape[0] - height) <= 4 and abs(crop.shape[1] - width) <= 4


def test_two_digits_written_side_by_side_are_refused_in_one_line(tmp_path):
    image, draw = page()
    draw.line([(40, 60), (40, 220)], fill=0, width=14)  # a 1 ...
    draw.ellipse((110, 60, 250, 220), outline=0, width=14)  # ... beside a 0: "10"
    image.save(tmp_path / "ten.png")
    with pytest.raises(imaging.ImageError, match=r"ten.png: 2 digits side by side found; crop"):
        imaging.to_mnist(tmp_path / "ten.png")


def tight_scan(scale: int) -> np.ndarray:
    """A small scan cropped to the digit, as datasets of 8x8 scans are: ink touches the frame."""
    small = np.full((8, 8), 255.0)
    small[0, 2:6] = small[7, 2:6] = 0  # a 0 from the top edge to the bottom one
    small[1:7, 1] = small[1:7, 6] = 0
    small[[0, 0, 7, 7], [1, 6, 1, 6]] = 128
    return np.kron(small, np.ones((scale, scale)))


@pytest.mark.parametrize("scale", [1, 4, 8])
def test_a_tight_small_scan_is_paper_of_one_level_not_ink_everywhere(tmp_path, scale):
    scan = tight_scan(scale)
    assert paper.is_flat(scan)
    Image.fromarray(scan.astype(np.uint8)).save(tmp_path / "zero.png")
    mnist = imaging.to_mnist(tmp_path / "zero.png")[..., 0]
    assert mnist[14, 14] < 64, "the hole of the 0 came out as ink"
    assert ink_rows(mnist[..., np.newaxis]) >= 18


def test_unevenly_lit_paper_is_still_estimated_locally():
    gradient = np.tile(np.linspace(120, 240, SIDE), (SIDE, 1))
    assert not paper.is_flat(gradient)


def test_a_photo_of_over_50_megapixels_is_read_decoding_it_reduced(tmp_path):
    image = Image.new("L", (9000, 6000), 230)
    draw = ImageDraw.Draw(image)
    draw.line([(4000, 2000), (5000, 2000), (4400, 4200)], fill=20, width=120)
    image.save(tmp_path / "big.jpg", quality=80)
    with (tmp_path / "big.jpg").open("rb") as stream:
        gray = imaging.decode(stream, "big.jpg")
    assert max(gray.shape) <= 9000 // 4  # reduced by the JPEG decoder, never held at full size
    assert imaging.to_mnist(tmp_path / "big.jpg").max() == 255


def test_a_png_bomb_is_refused_before_decoding(tmp_path):
    Image.new("1", (10_000, 10_000), 1).save(tmp_path / "bomb.png")  # ~12 KB of file
    with pytest.raises(imaging.ImageError, match=r"10000x10000 pixels is more than .* from PNG"):
        imaging.to_mnist(tmp_path / "bomb.png")


def test_a_jpeg_declaring_gigapixels_is_refused_before_decoding(tmp_path):
    buffer = io.BytesIO()
    Image.new("L", (16, 16), 255).save(buffer, "JPEG")
    header = bytearray(buffer.getvalue())
    frame = header.index(b"\xff\xc0")  # start of frame: precision, height, width
    header[frame + 5 : frame + 9] = (60_000).to_bytes(2, "big") * 2
    with pytest.raises(imaging.ImageError, match="60000x60000 pixels is more than this tool"):
        imaging.bytes_to_mnist(bytes(header), "the upload")


def test_uploaded_bytes_read_as_the_same_file_would(tmp_path):
    seven_with_a_crossbar().save(tmp_path / "seven.png")
    from_bytes = imaging.bytes_to_mnist((tmp_path / "seven.png").read_bytes(), "the upload")
    assert np.array_equal(from_bytes, imaging.to_mnist(tmp_path / "seven.png"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the upload is empty: send the bytes of one image"),
        (b"%PDF-1.7 not a picture", "the upload: not an image (PNG, JPEG"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "the upload: not"),
    ],
)
def test_bad_bytes_get_one_line_without_the_bytes(content, message):
    with pytest.raises(imaging.ImageError) as caught:
        imaging.bytes_to_mnist(content, "the upload")
    assert str(caught.value).startswith(message)
    assert "PDF" not in str(caught.value) and "\n" not in str(caught.value)
