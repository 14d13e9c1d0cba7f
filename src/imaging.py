"""A user's digit photo or scan -> one MNIST-style 28x28 uint8 image.

MNIST's recipe (LeCun et al.): white digit on black, the digit's bounding box scaled into 20x20
keeping its aspect ratio, then placed in 28x28 so that its centre of mass is at the centre.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from errors import PipelineError

BOX, CANVAS = 20, 28
# A 50-megapixel photo decodes to 200 MB of float32 here; a larger "image" is more likely a
# decompression bomb (a small file that expands to gigabytes) than a photo of a digit.
MAX_PIXELS = 50_000_000
INK = 0.25  # of the strongest pixel: fainter pixels are background noise, not stroke


class ImageError(PipelineError):
    """The file is not an image we can read, or holds no digit."""


def load_gray(path: Path) -> np.ndarray:
    """Read any Pillow-readable image as float grayscale; transparency counts as white paper."""
    if not path.is_file():
        raise ImageError(f"{path}: not found" if not path.exists() else f"{path}: not a file")
    try:
        with Image.open(path) as image:  # reads the header only: the size is known before decoding
            if image.width * image.height > MAX_PIXELS:
                raise ImageError(
                    f"{path}: {image.width}x{image.height} pixels is more than this tool decodes "
                    f"({MAX_PIXELS // 1_000_000} megapixels); scale it down first"
                )
            image.load()
            if image.mode in ("RGBA", "LA", "P"):
                paper = Image.new("RGBA", image.size, "white")
                image = Image.alpha_composite(paper, image.convert("RGBA"))
            return np.asarray(ImageOps.grayscale(image), dtype=np.float32)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as err:
        raise ImageError(f"{path}: not a readable image ({err})") from err


def ink(gray: np.ndarray) -> np.ndarray:
    """Stroke intensity, 0 = background: inverts dark-on-light input, judged by the border."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    strokes = gray - background if background < 128 else background - gray
    return np.clip(strokes, 0, None)


def crop_to_digit(strokes: np.ndarray, name: str) -> np.ndarray:
    if strokes.size == 0 or strokes.max() <= 0:
        raise ImageError(f"{name}: no digit found (the image is blank)")
    rows, cols = np.nonzero(strokes >= INK * strokes.max())
    return strokes[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def fit_box(crop: np.ndarray) -> np.ndarray:
    """Scale so the longer side is 20 px, keeping the aspect ratio, and stretch to 0..255."""
    height, width = crop.shape
    factor = BOX / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    scaled = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS))
    scaled = np.clip(scaled, 0, None)
    return scaled * (255.0 / scaled.max()) if scaled.max() > 0 else scaled


def centre_by_mass(box: np.ndarray) -> np.ndarray:
    """Place `box` in a 28x28 canvas with its centre of mass at the canvas centre."""
    ys, xs = np.indices(box.shape)
    mass = box.sum()
    com_y, com_x = (ys * box).sum() / mass, (xs * box).sum() / mass
    top = int(np.clip(round(CANVAS / 2 - com_y), 0, CANVAS - box.shape[0]))
    left = int(np.clip(round(CANVAS / 2 - com_x), 0, CANVAS - box.shape[1]))
    canvas = np.zeros((CANVAS, CANVAS), dtype=np.float32)
    canvas[top : top + box.shape[0], left : left + box.shape[1]] = box
    return canvas


def to_mnist(path: Path) -> np.ndarray:
    """The file's digit as MNIST sees digits: (28, 28, 1) uint8, white on black."""
    crop = crop_to_digit(ink(load_gray(path)), str(path))
    return np.round(centre_by_mass(fit_box(crop)))[..., np.newaxis].astype(np.uint8)
