"""Tiny synthetic MNIST in the real IDX .gz format, learnable enough to show a CNN works."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np

from ml import data

# The unit scaling of params.yaml's default, for tests that skip the preprocess stage.
UNIT = data.Scaling(scale=1 / 255, offset=0.0)


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX: magic 0x0000 08 <rank>, big-endian dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def synthetic_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Digit d is a bright 6x6 square at a position of its own, on noise: easy but not trivial."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(count) % 10).astype(np.uint8)
    images = rng.integers(0, 60, size=(count, 28, 28), dtype=np.uint8)
    for i, digit in enumerate(labels):
        row, col = 3 + 7 * (digit // 4), 2 + 6 * (digit % 4)
        images[i, row : row + 6, col : col + 6] = 255
    return images, labels


def synthetic_splits(count: int, seed: int, val: int) -> data.Splits:
    """`count` synthetic digits as the preprocess stage hands them on: the last `val` validate."""
    images, labels = synthetic_digits(count, seed)
    x = images[..., np.newaxis]
    train = data.Split(x[: count - val], labels[: count - val])
    return data.Splits(train=train, val=data.Split(x[count - val :], labels[count - val :]))


def write_raw(directory: Path, train: int = 300, test: int = 100) -> dict[str, str]:
    """Write the four .gz files; return the SHA-256 of each decompressed file, by name."""
    directory.mkdir(parents=True, exist_ok=True)
    digests = {}
    for prefix, count, seed in (("train", train, 0), ("t10k", test, 1)):
        images, labels = synthetic_digits(count, seed)
        for name, array in (
            (f"{prefix}-images-idx3-ubyte", images),
            (f"{prefix}-labels-idx1-ubyte", labels),
        ):
            raw = idx_bytes(array)
            (directory / f"{name}.gz").write_bytes(gzip.compress(raw))
            digests[name] = hashlib.sha256(raw).hexdigest()
    return digests
