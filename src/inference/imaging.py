"""A user's digit photo or scan -> one MNIST-style 28x28 uint8 image.

MNIST's recipe (LeCun et al.): white digit on black, the digit's bounding box scaled into 20x20
keeping its aspect ratio, then placed in 28x28 so that its centre of mass is at the centre.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from skimage import filters, measure, morphology, transform
from skimage.measure._regionprops import RegionProperties  # regionprops' items (no public name)

from common.errors import PipelineError
from inference import paper

BOX, CANVAS = 20, 28
# A 50-megapixel PNG decodes to 200 MB of float32 here; a larger one is more likely a
# decompression bomb (a small file that expands to gigabytes) than a photo of a digit. A JPEG is
# decoded reduced up to 8 times each way: 256 megapixels (phones save 50-200) costs at most 4.
MAX_PIXELS = 50_000_000
MAX_JPEG_PIXELS = 256_000_000
MAX_SIDE = 512  # px: photos are scaled down to this before anything else (see `shrink`)
MIN_CONTRAST = 0.25  # of the strongest strokes: fainter pixels are paper texture or noise
SPECK = 0.0002  # of the image's pixels: smaller components are dust or noise
LINE_SPAN, LINE_FILL = 0.8, 0.2  # spans 80% of the image, fills <20% of its box: a ruled line
EDGE = 0.25  # of the strongest strokes: the faintest edge pixel still drawn
GAP = 0.1  # of the tallest piece's height: columns of ink this far apart are separate digits
DIGIT_SHARE = 0.25  # of the digit's heaviest stroke: a group apart with one as heavy is a digit
NEAR = 0.35  # of the digit's size: a smaller group this close is a stray piece of it


class ImageError(PipelineError):
    """The file is not an image we can read, or holds no digit."""


def load_gray(path: Path) -> np.ndarray:
    """Read an image file as float grayscale (see `decode`)."""
    if not path.is_file():
        raise ImageError(f"{path}: not found" if not path.exists() else f"{path}: not a file")
    with path.open("rb") as stream:
        return decode(stream, str(path))


def decode(stream: BinaryIO, name: str) -> np.ndarray:
    """Any Pillow-readable image as float grayscale; transparency counts as white paper. A JPEG
    larger than MAX_SIDE is decoded already reduced (by 1/2 to 1/8 in the decoder itself), so a
    200-megapixel photo costs what a 3-megapixel one does."""
    # This module's limits replace Pillow's (it refuses 179 megapixels: phones' high-resolution
    # modes); they are checked on the header, before anything is decoded.
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(stream) as image:  # reads the header only: the size is known here
            check_size(image, name)
            image.draft(None, (MAX_SIDE, MAX_SIDE))  # JPEG only: decodes at >= this size
            image.load()
            image = ImageOps.exif_transpose(image)  # phones store photos sideways plus a tag
            if image.mode in ("RGBA", "LA", "P"):
                paper = Image.new("RGBA", image.size, "white")
                image = Image.alpha_composite(paper, image.convert("RGBA"))
            return np.asarray(ImageOps.grayscale(image), dtype=np.float32)
    except UnidentifiedImageError as err:
        raise ImageError(f"{name}: not an image (PNG, JPEG, GIF, BMP, TIFF, WebP, ...)") from err
    except (OSError, ValueError) as err:
        raise ImageError(f"{name}: not a readable image ({err})") from err


def check_size(image: Image.Image, name: str) -> None:
    """Refuse, before decoding, what would take gigabytes: a decompression bomb (a small file
    declaring a huge image) looks like that, too."""
    pixels = image.width * image.height
    limit = MAX_JPEG_PIXELS if image.format == "JPEG" else MAX_PIXELS
    if pixels > limit:
        advice = (
            "scale it down first" if image.format == "JPEG" else "save it as JPEG or scale it down"
        )
        raise ImageError(
            f"{name}: {image.width}x{image.height} pixels is more than this tool decodes from "
            f"{image.format or 'this format'} ({limit // 1_000_000} megapixels); {advice}"
        )


def shrink(gray: np.ndarray) -> np.ndarray:
    """Scale a large photo down to MAX_SIDE: a digit filling a tenth of the frame keeps ~50 px,
    plenty for a 20 px box, and every later step runs in milliseconds."""
    factor = MAX_SIDE / max(gray.shape)
    if factor >= 1:
        return gray
    return transform.rescale(gray, factor, anti_aliasing=True, preserve_range=True)


def digit_mask(strength: np.ndarray, name: str) -> np.ndarray:
    """The pixels of the one digit in the image: all its pieces of ink (a `4` in two strokes, an
    `8` whose loops do not meet), without specks, ruled lines and frame edges.

    MNIST centres a digit on the box around all of its ink, so every piece above or below
    another belongs with it; pieces side by side with a clear gap are separate digits.
    """
    if strength.max() <= 0:
        raise ImageError(f"{name}: no digit found (the image is blank)")
    threshold = max(filters.threshold_otsu(strength), MIN_CONTRAST * paper.peak(strength))
    labels = measure.label(strength > threshold)
    parts = [part for part in measure.regionprops(labels, strength) if is_stroke(part, labels)]
    if not parts:
        raise ImageError(f"{name}: no digit found (only specks or lines)")
    groups = side_by_side(parts)
    main = max(groups, key=ink)
    digits = [group for group in groups if is_digit(group, main)]
    if len(digits) > 1:
        raise ImageError(
            f"{name}: {len(digits)} digits side by side found; crop the image to one digit"
        )
    kept = [part.label for group in groups if group is main or near(group, main) for part in group]
    return np.isin(labels, kept)


Piece = RegionProperties  # one connected piece of ink
Group = list[Piece]  # the pieces in one run of columns


def side_by_side(parts: list[Piece]) -> list[Group]:
    """The pieces grouped left to right: a piece starting within GAP (of the tallest piece's
    height) of the right edge of the group before it joins that group."""
    gap = GAP * max(part.bbox[2] - part.bbox[0] for part in parts)
    groups: list[Group] = []
    right = 0.0
    for part in sorted(parts, key=lambda part: part.bbox[1]):
        left, part_right = part.bbox[1], part.bbox[3]
        if groups and left <= right + gap:
            groups[-1].append(part)
            right = max(right, part_right)
        else:
            groups.append([part])
            right = part_right
    return groups


def ink(group: Group) -> float:
    return float(sum(part.image_intensity.sum() for part in group))


def heaviest_piece(group: Group) -> float:
    return max(float(part.image_intensity.sum()) for part in group)


def is_digit(group: Group, main: Group) -> bool:
    """The main group, or one as heavy as a digit beside it: a stroke of DIGIT_SHARE of the
    main group's heaviest one (a shadow's edge or a ruled line breaks into many small pieces)."""
    return group is main or heaviest_piece(group) >= DIGIT_SHARE * heaviest_piece(main)


def extent(group: Group) -> tuple[int, int, int, int]:
    """top, left, bottom, right around every piece of the group."""
    tops, lefts, bottoms, rights = zip(*(part.bbox for part in group), strict=True)
    return min(tops), min(lefts), max(bottoms), max(rights)


def near(group: Group, main: Group) -> bool:
    """Within NEAR of the main group's size of its box: a stray piece of the same digit."""
    top, left, bottom, right = extent(main)
    margin = NEAR * max(bottom - top, right - left)
    g_top, g_left, g_bottom, g_right = extent(group)
    return (
        g_bottom > top - margin
        and g_top < bottom + margin
        and g_right > left - margin
        and g_left < right + margin
    )


def is_stroke(part: Piece, labels: np.ndarray) -> bool:
    """Neither a speck nor a ruled line (long and thin, spanning most of the image)."""
    height, width = part.image.shape
    if part.area < SPECK * labels.size:
        return False
    spans = height > LINE_SPAN * labels.shape[0] or width > LINE_SPAN * labels.shape[1]
    return not (spans and part.area < LINE_FILL * height * width)


def crop_to_digit(gray: np.ndarray, name: str) -> np.ndarray:
    """Stroke strength inside the digit's bounding box, paper set to 0 and strokes to ~255."""
    strength = paper.strokes(shrink(gray))
    core = digit_mask(strength, name)
    # The digit's faint edges too (anti-aliasing, a light touch of the pen), as MNIST keeps them:
    # pixels above the noise level next to its strokes.
    digit = morphology.dilation(core, morphology.disk(2)) & (strength > EDGE * paper.peak(strength))
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
    return as_mnist(load_gray(path), str(path))


def bytes_to_mnist(content: bytes, name: str) -> np.ndarray:
    """The same for an image's bytes (an upload); `name` stands for it in messages."""
    if not content:
        raise ImageError(f"{name} is empty: send the bytes of one image")
    return as_mnist(decode(io.BytesIO(content), name), name)


def as_mnist(gray: np.ndarray, name: str) -> np.ndarray:
    crop = crop_to_digit(gray, name)
    return np.round(centre_by_mass(fit_box(crop)))[..., np.newaxis].astype(np.uint8)
