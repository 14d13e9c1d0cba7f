"""Digits as people have them, made from MNIST test digits: one distortion family at a time.

Each family turns a 28x28 test digit (white on black) into an image file a user might pass to
predict.py. `photo` combines what a phone photo of a digit on paper does at once. The same seed
gives the same files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

Maker = Callable[[np.ndarray, np.random.Generator], Image.Image]
PAPER, PEN = 205.0, 45.0  # grey levels of paper and ink under even light


def ink_of(digit: np.ndarray, side: int, stroke: int = 0) -> np.ndarray:
    """The digit's ink (0..1) scaled to `side` px; stroke > 0 thickens it, < 0 thins it."""
    image = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    if stroke:
        size = 2 * abs(stroke) + 1
        image = image.filter(
            ImageFilter.MaxFilter(size) if stroke > 0 else ImageFilter.MinFilter(size)
        )
    return np.asarray(image, dtype=np.float32) / 255.0


def on_paper(ink: np.ndarray, shape: tuple[int, int], at: tuple[int, int]) -> np.ndarray:
    """Dark ink on an evenly lit grey page of `shape`, the digit's corner at `at`."""
    page = np.full(shape, PAPER, np.float32)
    top, left = at
    window = page[top : top + ink.shape[0], left : left + ink.shape[1]]
    window -= ink * (PAPER - PEN)
    return page


def clean(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """The 28x28 test image itself, as a PNG: the model's own input."""
    return Image.fromarray(digit)


def scan(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A flatbed scan: dark ink on white, digit large and roughly centred."""
    ink = ink_of(digit, 200)
    page = on_paper(ink, (260, 260), (int(rng.integers(10, 50)), int(rng.integers(10, 50))))
    return grey(page + 50)


def drawn(stroke: int) -> Maker:
    def paint(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
        """Drawn in a paint program: pure black on white, thin or thick brush."""
        ink = ink_of(digit, 280, stroke) > 0.5
        return grey(np.where(ink, 0.0, 255.0))

    return paint


def inverted(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Light ink on a dark background (chalk on a board, a dark-mode drawing)."""
    ink = ink_of(digit, 120)
    return grey(30 + ink * 190)


def transparent(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Black strokes on a transparent canvas (the alpha channel carries the ink)."""
    alpha = (ink_of(digit, 200) * 255).astype(np.uint8)
    black = np.zeros((*alpha.shape, 3), np.uint8)
    return Image.fromarray(np.dstack([black, alpha]), "RGBA")


def small_off_centre(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A small digit anywhere in a large frame."""
    shape, side = (600, 800), int(rng.integers(60, 110))
    at = (int(rng.integers(0, shape[0] - side)), int(rng.integers(0, shape[1] - side)))
    return grey(on_paper(ink_of(digit, side), shape, at))


def lighting(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A lighting gradient across the page and a soft shadow over one side."""
    page = on_paper(ink_of(digit, 240), (400, 400), (80, 80))
    return grey(page * light(page.shape, rng))


def light(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A multiplicative light field: a gradient in a random direction and a soft shadow."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]] / max(shape)
    angle = rng.uniform(0, 2 * np.pi)
    gradient = 0.55 + 0.5 * (np.cos(angle) * xs + np.sin(angle) * ys + 0.5) / 1.5
    edge = rng.uniform(0.2, 0.8) * shape[1]
    shadow = 1 - 0.35 * ndimage.gaussian_filter((np.arange(shape[1]) < edge) * 1.0, 25)
    return np.clip(gradient, 0.3, 1.2) * shadow[np.newaxis, :]


def noise_and_jpeg(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Sensor noise, then JPEG compression at a phone's quality."""
    page = on_paper(ink_of(digit, 160), (240, 240), (40, 40))
    return jpeg(grey(page + rng.normal(0, 12, page.shape)), rng)


def rotated(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """The paper a little turned (up to 12 degrees either way)."""
    page = on_paper(ink_of(digit, 180), (280, 280), (50, 50))
    return grey(ndimage.rotate(page, rng.uniform(-12, 12), reshape=False, cval=PAPER, order=1))


def ruled(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """On lined or squared paper: faint printed rules under the digit."""
    page = on_paper(ink_of(digit, 200), (320, 320), (60, 60))
    return grey(page - rules(page.shape, rng, squared=bool(rng.integers(0, 2))))


def rules(shape: tuple[int, int], rng: np.random.Generator, squared: bool) -> np.ndarray:
    pitch, offset = int(rng.integers(28, 45)), int(rng.integers(0, 20))
    lines = np.zeros(shape, np.float32)
    lines[offset::pitch, :] = 55
    if squared:
        lines[:, offset::pitch] = 55
    return ndimage.gaussian_filter(lines, 0.7)


def photo(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A phone photo: small and anywhere in the frame, turned, uneven light, noise, JPEG, and
    (one in two) lined or squared paper."""
    shape, side = (480, 640), int(rng.integers(90, 160))
    at = (int(rng.integers(20, shape[0] - side - 20)), int(rng.integers(20, shape[1] - side - 20)))
    page = on_paper(ink_of(digit, side), shape, at)
    if rng.integers(0, 2):
        page -= rules(shape, rng, squared=bool(rng.integers(0, 2)))
    page = ndimage.rotate(page, rng.uniform(-10, 10), reshape=False, cval=PAPER, order=1)
    page = page * light(shape, rng) + rng.normal(0, 8, shape)
    return jpeg(grey(page), rng)


def broken(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Pen strokes that do not meet: one to three thin cuts across the ink (a `4` written in two
    strokes, an `8` whose loops stay apart, a pen that skipped)."""
    ink = ink_of(digit, 200)
    rows, cols = np.nonzero(ink > 0.5)
    ys, xs = np.mgrid[0:200, 0:200]
    for _ in range(int(rng.integers(1, 4))):
        at = int(rng.integers(0, len(rows)))  # through a point of the ink
        angle = rng.uniform(0, np.pi)
        across = (ys - rows[at]) * np.cos(angle) - (xs - cols[at]) * np.sin(angle)
        ink = np.where(np.abs(across) < rng.uniform(1.5, 3.5), 0.0, ink)  # 3-7 px gaps
    return grey(on_paper(ink, (260, 260), (30, 30)) + 50)


def low_resolution(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A small, blurry scan upscaled: dark ink on white with 8 to 14 px of real information."""
    side = int(rng.integers(8, 15))
    small = Image.fromarray(digit).resize((side, side), Image.Resampling.BOX)
    page = 240 - np.asarray(small, np.float32) / 255 * 200
    scale = int(rng.integers(3, 9))
    large = Image.fromarray(page).resize((side * scale,) * 2, Image.Resampling.BILINEAR)
    return grey(ndimage.gaussian_filter(np.asarray(large), scale / 3))


def side_by_side(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Two digits written next to each other, 0.15 to 0.5 of their height apart (this one and
    itself turned by a quarter, half or three quarters): must be refused, not read as one."""
    other = np.rot90(digit, int(rng.integers(1, 4)))
    left, right = (digit, other) if rng.integers(0, 2) else (other, digit)
    boxes = [tight(ink_of(part, 150)) for part in (left, right)]
    gap = int(rng.uniform(0.15, 0.5) * max(box.shape[0] for box in boxes))
    height = max(box.shape[0] for box in boxes)
    ink = np.zeros((height, boxes[0].shape[1] + gap + boxes[1].shape[1]), np.float32)
    for box, column in zip(boxes, (0, boxes[0].shape[1] + gap), strict=True):
        top = (height - box.shape[0]) // 2
        ink[top : top + box.shape[0], column : column + box.shape[1]] = box
    return grey(on_paper(ink, (height + 80, ink.shape[1] + 80), (40, 40)))


def tight(ink: np.ndarray) -> np.ndarray:
    """The ink's bounding box."""
    rows, cols = np.nonzero(ink > 0.1)
    return ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def grey(page: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.round(page), 0, 255).astype(np.uint8))


def jpeg(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Round-trip through JPEG at quality 60-85, so its block artefacts are in the pixels."""
    from io import BytesIO

    buffer = BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(60, 86)))
    buffer.seek(0)
    return Image.open(buffer).convert("L")


FAMILIES: dict[str, Maker] = {
    "clean 28x28": clean,
    "scan": scan,
    "drawn, thin brush": drawn(-2),
    "drawn, thick brush": drawn(5),
    "light on dark": inverted,
    "transparent PNG": transparent,
    "small, off-centre": small_off_centre,
    "uneven lighting": lighting,
    "noise + JPEG": noise_and_jpeg,
    "rotated": rotated,
    "lined/squared paper": ruled,
    "photo (all combined)": photo,
    "broken strokes": broken,
    "low-resolution scan": low_resolution,
}
# Images that hold no single digit: the right answer is a refusal.
REFUSED: dict[str, Maker] = {"two digits side by side": side_by_side}


def write_family(name: str, digits: np.ndarray, directory: Path, seed: int) -> list[Path]:
    """Write one file per digit for `name`; return the paths in the digits' order."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index, digit in enumerate(digits):
        path = directory / f"{index:05d}.png"
        (FAMILIES | REFUSED)[name](digit, rng).save(path)
        paths.append(path)
    return paths
