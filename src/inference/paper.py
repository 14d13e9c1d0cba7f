"""Stroke strength in a photo or scan of a digit: the paper taken away, whatever its light.

Where the frame is evenly lit paper (a drawing, a scan), the paper is one level; elsewhere (a
phone photo: gradients, shadows) it is estimated at every pixel from the paper pixels alone.
"""

from __future__ import annotations

import numpy as np
from skimage import filters, transform

COARSE_SIDE = 64  # px: the paper's light is estimated this small (it varies slowly)
# Blur sigma, as a fraction of the side, of each round that estimates the paper: wide, so thick
# strokes cannot pass for paper (narrower follows shadow edges better but hollows bold digits).
PAPER_BLURS = (0.125, 0.125, 0.125)
BORDER = 0.02  # of the shorter side: the frame that `is_flat` looks at
FLAT = 8  # grey levels: the spread of evenly lit paper
FLAT_SHARE = 0.55  # of the frame: at one level (within FLAT), it is evenly lit paper


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
    """Evenly lit paper: most of the frame is one level (within FLAT grey levels). Bold strokes
    covering a third of the image defeat any local estimate of the paper (they are the local
    majority) but never reach most of the frame; nor do the strokes of a digit cropped tight
    (a small scan whose ink touches the edges), or noise and printed rules on evenly lit paper.
    Uneven light spreads the frame over many levels."""
    return frame_mode(gray)[1] >= FLAT_SHARE


def flat_paper(gray: np.ndarray) -> np.ndarray:
    return np.full(gray.shape, frame_mode(gray)[0], dtype=gray.dtype)


def frame_mode(gray: np.ndarray) -> tuple[float, float]:
    """The frame's most common level (its paper, when evenly lit), and the share of the frame
    within FLAT grey levels of it."""
    frame = border(gray)
    counts, _ = np.histogram(frame, bins=256, range=(-0.5, 255.5))
    within = np.convolve(counts, np.ones(FLAT + 1), mode="same")  # per level: pixels within FLAT/2
    level = int(within.argmax())
    near = np.abs(frame - level) <= FLAT / 2
    return float(np.median(frame[near])), float(within[level] / frame.size)


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
