"""Corrections collected by the served page: what the model saw, what it said, what was right.

One correction is two files in the collection folder, named by the digest of the image's pixels
(so the same image sent twice is stored once, and no name comes from the request):
    <digest>.png   the 28x28 image the model saw, re-encoded here (never the uploaded bytes)
    <digest>.json  {"label", "answer", "model": {"name", "version", "uri"}}
Both are written to a temp file and renamed, the JSON last: a correction without its JSON is
unfinished and never read. `read_all` gives the collection to the preprocess stage.
"""

from __future__ import annotations

import hashlib
import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from common import files
from common.errors import PipelineError

SIDE = 28
MAX_CORRECTIONS = 10_000  # ~5 MB of files: a cap on what an open page can make the server write


class FeedbackError(PipelineError):
    """A correction that cannot be stored; the message says why (never echoing the input)."""


@dataclass(frozen=True)
class Correction:
    image: np.ndarray  # (28, 28) uint8, white on black
    label: int
    answer: int
    model: dict[str, Any]


class Collection:
    """The corrections folder of one server; safe for its request threads."""

    def __init__(self, folder: Path, cap: int = MAX_CORRECTIONS) -> None:
        self.folder = folder
        self.cap = cap
        self.lock = threading.Lock()

    def add(self, correction: Correction) -> bool:
        """Store the correction; False when this image was already collected."""
        digest = hashlib.sha256(correction.image.tobytes()).hexdigest()[:24]
        record = self.folder / f"{digest}.json"
        with self.lock:
            if record.exists():
                return False
            if len(list(self.folder.glob("*.json"))) >= self.cap:
                raise FeedbackError(
                    f"the collection holds {self.cap} corrections, its limit: add it to the "
                    "dataset (`dvc add data/feedback`) and start a new folder"
                )
            files.write_bytes(self.folder / f"{digest}.png", png(correction.image))
            files.write_json(
                record,
                {"label": correction.label, "answer": correction.answer, "model": correction.model},
            )
        return True


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image, "L").save(buffer, "PNG")
    return buffer.getvalue()


def parse(body: Any) -> tuple[np.ndarray, int]:
    """The image and label of a request {"image": 28 rows of 28 ints 0..255, "label": 0..9}."""
    if not isinstance(body, dict):
        raise FeedbackError('send {"image": [28 rows of 28 pixels 0..255], "label": 0-9}')
    label = body.get("label")
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label <= 9:
        raise FeedbackError('"label" must be the right digit, an integer 0-9')
    try:
        image = np.asarray(body.get("image"), dtype=np.float64)
    except (TypeError, ValueError):
        raise FeedbackError('"image" must be 28 rows of 28 numbers 0..255') from None
    if image.shape != (SIDE, SIDE):
        raise FeedbackError('"image" must be 28 rows of 28 numbers 0..255 (as /digit answers)')
    if not np.isfinite(image).all() or image.min() < 0 or image.max() > 255:
        raise FeedbackError('"image" pixels must be whole numbers 0..255')
    if (image != np.round(image)).any():
        raise FeedbackError('"image" pixels must be whole numbers 0..255')
    return image.astype(np.uint8), label


def read_all(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every finished correction in `folder`: images (N, 28, 28) uint8 and labels (N,), sorted by
    name so the same folder always gives the same arrays."""
    images, labels = [], []
    for record in sorted(folder.glob("*.json")):
        entry = files.read_json(record, fix=f"delete {record.name} and its .png")
        picture = record.with_suffix(".png")
        try:
            with Image.open(picture) as image:
                pixels = np.asarray(image.convert("L"), dtype=np.uint8)
        except OSError as err:
            raise FeedbackError(
                f"{picture}: not a readable image ({err}); delete it and {record.name}"
            ) from err
        label = entry.get("label") if isinstance(entry, dict) else None
        if pixels.shape != (SIDE, SIDE) or label not in range(10):
            raise FeedbackError(f"{record}: not a correction; delete it and its .png")
        images.append(pixels)
        labels.append(label)
    if not images:
        return np.zeros((0, SIDE, SIDE), np.uint8), np.zeros(0, np.uint8)
    return np.stack(images), np.asarray(labels, np.uint8)
