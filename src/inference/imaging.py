"""A user's digit photo or scan -> one MNIST-style 28x28 uint8 image.

MNIST's recipe (LeCun et al.): white digit on black, the digit's bounding box scaled into 20x20
keeping its aspect ratio, then placed in 28x28 so that its centre of mass is at the centre.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from skimage import filters, measure, morphology, transform

from common.errors import PipelineError

BOX, CANVAS = 20, 28
# A 50-megapixel photo decodes to 200 MB of float32 here; a larger "image" is more likely a
# decompression bomb (a small file that expands to gigabytes) than a photo of a digit.
MAX_PIXELS = 50_000_000
MAX_SIDE = 512  # px: photos are scaled down to this before anything else (see `shrink`)
COARSE_SIDE = 64  # px: the paper's light is estimated this small (it varies slowly)
# Blur sigma, as a fraction of the side, of each round that estimates the paper: wide, so thick
# strokes cannot pass for paper (narrower follows shadow edges better but hollows bold digits).
PAPER_BLURS = (0.125, 0.125, 0.125)
BORDER = 0.02  # of the shorter side: the frame that `is_flat` looks at
FLAT = 8.0  # grey levels: a frame whose brightness varies less than this is evenly lit paper
MIN_CONTRAST = 0.25  # of the strongest strokes: fainter pixels are paper texture or noise
SPECK = 0.0002  # of the image's pixels: smaller components are dust or noise
LINE_SPAN, LINE_FILL = 0.8, 0.2  # spans 80% of the image, fills <20% of its box: a ruled line
EDGE = 0.25  # of the strongest strokes: the faintest edge pixel still drawn
NEAR = 0.35  # of the digit's size: pieces this close belong to it (a broken or detached stroke)
RIVAL = 0.5  # a component apart from the digit with half its ink or more is a second digit


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
            image = ImageOps.exif_transpose(image)  # phones store photos sideways plus a tag
            if image.mode in ("RGBA", "LA", "P"):
                paper = Image.new("RGBA", image.size, "white")
                image = Image.alpha_composite(paper, image.convert("RGBA"))
            return np.asarray(ImageOps.grayscale(image), dtype=np.float32)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as err:
        raise ImageError(f"{path}: not a readable image ({err})") from err


def shrink(gray: np.ndarray) -> np.ndarray:
    """Scale a large photo down to MAX_SIDE: a digit filling a tenth of the frame keeps ~50 px,
    plenty for a 20 px box, and every later step runs in milliseconds."""
    factor = MAX_SIDE / max(gray.shape)
    if factor >= 1:
        return gray
    return transform.rescale(gray, factor, anti_aliasing=True, preserve_range=True)


def strokes(gray: np.ndarray) -> np.ndarray:
    """Stroke strength, 0 = paper, whichever the polarity and however uneven the light.

    The paper's own level (one level where the frame is evenly lit, see `is_flat`; else estimated
    everywhere, see `paper_level`) is subtracted; the ink is the polarity with the stronger
    strokes (dark pen on paper, or chalk on a board).
    """
    smooth = filters.gaussian(gray, sigma=min(gray.shape) / 300, preserve_range=True)
    residual = smooth - (flat_paper(smooth) if is_flat(smooth) else paper_level(smooth))
    dark_ink, light_ink = np.clip(-residual, 0, None), np.clip(residual, 0, None)
    return dark_ink if peak(dark_ink) >= peak(light_ink) else light_ink


def border(gray: np.ndarray) -> np.ndarray:
    """The pixels of the image's outer frame, BORDER of the shorter side wide (at least 1 px)."""
    width = max(1, round(min(gray.shape) * BORDER))
    inner = np.zeros(gray.shape, dtype=bool)
    inner[width:-width, width:-width] = True
    return gray[~inner]


def is_flat(gray: np.ndarray) -> bool:
    """Evenly lit paper all around (a drawing, a clean scan): then the paper is one level. Bold
    strokes covering a third of the image defeat any local estimate of the paper (they are the
    local majority) but never reach all of the frame."""
    low, high = np.percentile(border(gray), [2, 98])
    return high - low <= FLAT


def flat_paper(gray: np.ndarray) -> np.ndarray:
    return np.full(gray.shape, np.median(border(gray)), dtype=gray.dtype)


def paper_level(gray: np.ndarray) -> np.ndarray:
    """The brightness the paper would have at each pixel without ink: a wide blur of the paper
    pixels alone, so gradients and soft shadows go and thick strokes do not leak in.

    Ink is found as what lies far from the current estimate (3 robust deviations), and left
    out of the next; the blur runs on a copy ~64 px small, as the light varies slowly.
    """
    small = transform.resize(gray, coarse_shape(gray.shape), anti_aliasing=True)
    weight = np.ones_like(small)
    for blur in PAPER_BLURS:
        sigma = min(small.shape) * blur
        level = filters.gaussian(small * weight, sigma) / np.maximum(
            filters.gaussian(weight, sigma), 1e-6
        )
        weight = paper_weight(small - level)
    return transform.resize(level, gray.shape)


def paper_weight(residual: np.ndarray) -> np.ndarray:
    """1 where a pixel is within 3 robust deviations of the paper level, else 0 (ink)."""
    spread = 1.4826 * np.median(np.abs(residual)) + 1.0  # the MAD as a standard deviation
    return (np.abs(residual) < 3 * spread).astype(residual.dtype)


def coarse_shape(shape: tuple[int, int]) -> tuple[int, int]:
    factor = min(1.0, COARSE_SIDE / min(shape))
    return max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor))


def peak(strength: np.ndarray) -> float:
    """The strength of the strongest strokes, robust to a few hot pixels."""
    return float(np.percentile(strength, 99.9))


def digit_mask(strength: np.ndarray, name: str) -> np.ndarray:
    """The pixels of the one digit in the image: its largest ink component and the pieces near
    it (a broken stroke, a detached bar), without specks, ruled lines and frame edges."""
    if strength.max() <= 0:
        raise ImageError(f"{name}: no digit found (the image is blank)")
    threshold = max(filters.threshold_otsu(strength), MIN_CONTRAST * peak(strength))
    labels = measure.label(strength > threshold)
    parts = [part for part in measure.regionprops(labels, strength) if is_stroke(part, labels)]
    if not parts:
        raise ImageError(f"{name}: no digit found (only specks or lines)")
    main = max(parts, key=lambda part: part.image_intensity.sum())
    rivals = [part for part in parts if part is not main and rivals_main(part, main)]
    if rivals:
        raise ImageError(
            f"{name}: {len(rivals) + 1} digit-like shapes found; crop the image to one digit"
        )
    near = [part.label for part in parts if is_near(part, main)]
    return np.isin(labels, near)


def is_stroke(part: measure._regionprops.RegionProperties, labels: np.ndarray) -> bool:
    """Neither a speck nor a ruled line (long and thin, spanning most of the image)."""
    height, width = part.image.shape
    if part.area < SPECK * labels.size:
        return False
    spans = height > LINE_SPAN * labels.shape[0] or width > LINE_SPAN * labels.shape[1]
    return not (spans and part.area < LINE_FILL * height * width)


def is_near(part, main) -> bool:
    """Within a third of the main component's size of its bounding box."""
    top, left, bottom, right = main.bbox
    margin = NEAR * max(bottom - top, right - left)
    p_top, p_left, p_bottom, p_right = part.bbox
    return (
        p_bottom > top - margin
        and p_top < bottom + margin
        and p_right > left - margin
        and p_left < right + margin
    )


def rivals_main(part, main) -> bool:
    """A second digit: comparable ink, apart from the main component."""
    heavy = part.image_intensity.sum() > RIVAL * main.image_intensity.sum()
    return heavy and not is_near(part, main)


def crop_to_digit(gray: np.ndarray, name: str) -> np.ndarray:
    """Stroke strength inside the digit's bounding box, paper set to 0 and strokes to ~255."""
    strength = strokes(shrink(gray))
    core = digit_mask(strength, name)
    # The digit's faint edges too (anti-aliasing, a light touch of the pen), as MNIST keeps them:
    # pixels above the noise level next to its strokes.
    digit = morphology.dilation(core, morphology.disk(2)) & (strength > EDGE * peak(strength))
    rows, cols = np.nonzero(digit)
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    crop = np.where(digit, strength, 0.0)[box]
    # MNIST's strokes are saturated in the core: the strong strokes' level maps to 255.
    return np.clip(crop / np.percentile(strength[core], 99), 0, 1) * 255


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
    crop = crop_to_digit(load_gray(path), str(path))
    return np.round(centre_by_mass(fit_box(crop)))[..., np.newaxis].astype(np.uint8)
