"""Files as users have them, made from MNIST digits."""

from __future__ import annotations

import numpy as np
from PIL import Image


def as_user_png(digit: np.ndarray, path, size: tuple[int, int], dark_on_light: bool) -> None:
    """Render an MNIST digit the way a user's file might look: bigger, off-centre, either way."""
    side = min(size) * 2 // 3
    big = Image.fromarray(digit.squeeze()).resize((side, side), Image.Resampling.BILINEAR)
    canvas = Image.new("L", size, 0)
    canvas.paste(big, ((size[0] - side) // 4, (size[1] - side) // 3))
    pixels = np.asarray(canvas)
    Image.fromarray(255 - pixels if dark_on_light else pixels).convert("RGB").save(path)
