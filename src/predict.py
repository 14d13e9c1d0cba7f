"""Predict digits in image files with the registered champion (or any model URI / .keras file).

python src/predict.py photo.png scan.jpg
python src/predict.py --model models/model.keras digit.png
python src/predict.py --model "models:/mnist-cnn@challenger" digit.png
python src/predict.py --json *.png      # for scripts: the model, then per file a digit or an error
"""

from __future__ import annotations

import runtime  # first: quiets the backends' start-up logging before keras loads them

# isort: split

import argparse
import json
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


def load_predictor(uri: str) -> tuple[Predictor, str | None]:
    """The model's predict function and its registry version: a .keras file loads directly (no
    version); anything else is an MLflow model URI."""
    if uri.endswith(".keras"):
        cnn = model.load(Path(uri))
        return lambda batch: cnn.predict(batch, verbose=0), None
    return registry.load_model(uri), registry.resolved_version(uri)


def read_images(paths: list[Path]) -> list[np.ndarray | imaging.ImageError]:
    """Each file as the model sees it, or why it cannot be read, in the order given."""
    images: list[np.ndarray | imaging.ImageError] = []
    for path in paths:
        try:
            images.append(imaging.to_mnist(path))
        except imaging.ImageError as err:
            images.append(err)
    return images


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
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)
    images = read_images(args.images)
    good = [image for image in images if isinstance(image, np.ndarray)]
    predictor, version = load_predictor(args.model)
    probabilities = iter(np.asarray(predictor(np.stack(good))) if good else [])
    answers = [
        image if isinstance(image, imaging.ImageError) else next(probabilities) for image in images
    ]
    report = as_json if args.json else as_lines
    report(args.model, version, args.images, answers)
    return 1 if len(good) < len(images) else 0


def as_lines(uri: str, version: str | None, paths: list[Path], answers: list) -> None:
    """The model once, then one line per file in the order given (errors on stderr)."""
    print(f"model: {uri}" + (f" (version {version})" if version else ""), flush=True)
    for path, answer in zip(paths, answers, strict=True):
        if isinstance(answer, imaging.ImageError):
            print(f"error: {answer}", file=sys.stderr, flush=True)
        else:
            print(f"{path}: {int(answer.argmax())} ({answer.max():.1%})", flush=True)


def as_json(uri: str, version: str | None, paths: list[Path], answers: list) -> None:
    files = [
        {"file": str(path), "error": str(answer)}
        if isinstance(answer, imaging.ImageError)
        else {
            "file": str(path),
            "digit": int(answer.argmax()),
            "probabilities": [round(float(p), 6) for p in answer],
        }
        for path, answer in zip(paths, answers, strict=True)
    ]
    print(json.dumps({"model": uri, "version": version, "files": files}, indent=2))


if __name__ == "__main__":
    runtime.configure()
    sys.exit(main())
