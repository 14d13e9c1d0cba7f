"""MNIST on disk: IDX parsing, content digests and the npz splits the stages hand each other."""

from __future__ import annotations

import gzip
import hashlib
import io
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from common import files
from common.errors import PipelineError

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
# The IDX magic number: two zero bytes, a type code (0x08 = unsigned byte), the rank.
_UBYTE = 0x08


class DataError(PipelineError):
    """A data file is missing or malformed; the message names the file and the fix."""


@dataclass(frozen=True)
class Split:
    """uint8 images (N, 28, 28, 1) and labels (N,): lossless, and 4x smaller than float32."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry


@dataclass(frozen=True)
class Splits:
    train: Split
    val: Split


@dataclass(frozen=True)
class Scaling:
    """pixel * scale + offset is what the model computes on; its first layer applies it."""

    scale: float
    offset: float


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def gunzip(blob: bytes, name: str) -> bytes:
    """Decompress, turning gzip's several failure types into one DataError naming the file."""
    try:
        return gzip.decompress(blob)
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
        raise DataError(
            f"{name}: not a complete gzip file ({err}); `dvc repro` fetches it again"
        ) from err


def parse_idx(raw: bytes, name: str, rank: int) -> np.ndarray:
    """Parse an uncompressed IDX file of unsigned bytes, checking magic, rank and length."""
    if len(raw) < 4 or raw[0:2] != b"\0\0" or raw[2] != _UBYTE or raw[3] != rank:
        raise DataError(
            f"{name}: wrong IDX magic {raw[:4].hex() or '(empty)'}, expected 000008{rank:02x}"
        )
    header = 4 + 4 * rank
    dims = (
        np.frombuffer(raw, dtype=">u4", count=rank, offset=4).astype(int)
        if len(raw) >= header
        else []
    )
    expected = header + int(np.prod(dims)) if len(dims) == rank else -1
    if len(raw) != expected:
        raise DataError(f"{name}: {len(raw)} bytes, but its IDX header promises {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(tuple(dims))


def read_idx_gz(path: Path, rank: int) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path} is missing: run `dvc repro` (or python src/fetch.py) first")
    return parse_idx(gunzip(path.read_bytes(), path.name), path.name, rank)


def read_images(path: Path) -> np.ndarray:
    images = read_idx_gz(path, rank=3)
    if images.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{path.name}: images are {images.shape[1:]}, expected {IMAGE_SHAPE}")
    return images[..., np.newaxis]


def read_labels(path: Path) -> np.ndarray:
    labels = read_idx_gz(path, rank=1)
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DataError(f"{path.name}: label {labels.max()} is not a digit")
    return labels


def read_pair(raw_dir: Path, prefix: str) -> Split:
    """Read `{prefix}-images-idx3-ubyte.gz` and its labels, checking that their counts agree."""
    x = read_images(raw_dir / f"{prefix}-images-idx3-ubyte.gz")
    y = read_labels(raw_dir / f"{prefix}-labels-idx1-ubyte.gz")
    if len(x) != len(y):
        raise DataError(f"{prefix}: {len(x)} images but {len(y)} labels")
    return Split(x, y)


def carve_validation(full: Split, val_size: int, seed: int) -> Splits:
    """Hold out `val_size` training images, stratified by digit: tuning never needs the test set."""
    train_idx, val_idx = train_test_split(
        np.arange(len(full)), test_size=val_size, stratify=full.y, random_state=seed
    )
    return Splits(
        train=Split(full.x[train_idx], full.y[train_idx]),
        val=Split(full.x[val_idx], full.y[val_idx]),
    )


def scaling(train: Split, method: str) -> Scaling:
    """unit: pixels to [0, 1]; standardize: the training pixels to mean 0 and deviation 1."""
    if method == "unit":
        return Scaling(scale=1 / 255, offset=0.0)
    mean, std = float(train.x.mean()), float(train.x.std())
    return Scaling(scale=1 / std, offset=-mean / std)


def save_split(path: Path, split: Split) -> None:
    """np.savez's format, with a fixed time on each entry (savez stamps the clock): the same
    split is the same bytes, so DVC sees a rerun stage that changed nothing as unchanged.
    Each entry is written whole (writestr), not streamed with zip64 forced as savez does:
    CPython 3.11.4 changed the version fields of a forced-zip64 entry, so a fresh clone on
    another 3.11 release wrote other bytes and changed dvc.lock."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, array in (("x", split.x), ("y", split.y)):
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.asarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_TIME), npy.getvalue())
    files.write_bytes(path, buffer.getvalue())


def joined(first: Split, second: Split) -> Split:
    return Split(np.concatenate([first.x, second.x]), np.concatenate([first.y, second.y]))


def load_split(path: Path) -> Split:
    if not path.exists():
        raise DataError(f"{path} is missing: run `dvc repro` (or python src/preprocess.py) first")
    try:
        with np.load(path) as npz:
            return Split(npz["x"], npz["y"])
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise DataError(
            f"{path}: not a readable split ({type(err).__name__}: {err}); "
            f"`dvc repro` rebuilds it (or python src/preprocess.py)"
        ) from err


def digest_dir(directory: Path) -> str:
    """One SHA-256 over every file's name and bytes: the dataset identity recorded with each run."""
    h = hashlib.sha256()
    for path in sorted(
        p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")
    ):
        h.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()
