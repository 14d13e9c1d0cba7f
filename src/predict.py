"""Predict digits in image files with the registered champion (or any model URI / .keras file).

python src/predict.py photo.png scan.jpg
python src/predict.py --model models/model.keras digit.png
python src/predict.py --model "models:/mnist-cnn@challenger" digit.png
"""

from __future__ import annotations

import runtime  # first: quiets the backends' start-up logging before keras loads them

# isort: split

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

import config
import imaging
import model
import registry
from errors import as_pipeline_error

Predictor = Callable[[np.ndarray], np.ndarray]


def load_predictor(uri: str) -> Predictor:
    """A .keras file loads directly; anything else is an MLflow model URI."""
    if uri.endswith(".keras"):
        cnn = model.load(Path(uri))
        return lambda batch: cnn.predict(batch, verbose=0)
    return registry.load_model(uri)


def read_images(paths: list[Path]) -> tuple[list[Path], np.ndarray, list[str]]:
    """Convert every readable file; collect one error line per file that is not."""
    good, images, errors = [], [], []
    for path in paths:
        try:
            images.append(imaging.to_mnist(path))
            good.append(path)
        except imaging.ImageError as err:
            errors.append(f"error: {err}")
    return good, np.stack(images) if images else np.empty((0, 28, 28, 1), np.uint8), errors


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when every file was predicted, 1 when any was not (or nothing could be)."""
    try:
        return predict(argv)
    except Exception as err:
        known = as_pipeline_error(err)
        if known is None:
            raise
        print(f"error: {known}", file=sys.stderr)
        return 1


def predict(argv: list[str] | None) -> int:
    params = config.load()
    default = f"models:/{params.tracking.registered_model}@{registry.CHAMPION}"
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", type=Path, help="PNG/JPG/... files, any size")
    parser.add_argument("--model", default=default, help=f"model URI or .keras file ({default})")
    args = parser.parse_args(argv)
    paths, batch, errors = read_images(args.images)
    probs = load_predictor(args.model)(batch) if len(batch) else batch
    for path, row in zip(paths, np.asarray(probs), strict=True):
        print(f"{path}: {int(row.argmax())} ({row.max():.1%})")
    for line in errors:
        print(line, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    runtime.configure()
    sys.exit(main())
