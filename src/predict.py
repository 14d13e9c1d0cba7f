"""Predict digits in image files with the registered champion (or any model URI / .keras file).

python src/predict.py photo.png scan.jpg
python src/predict.py --model models/model.keras digit.png
python src/predict.py --model "models:/mnist-cnn@challenger" digit.png
python src/predict.py --json *.png      # for scripts: the model, then per file a digit or an error
python src/predict.py --explain digit.png  # also draws what the CNN computed: reports/explain/
"""

from __future__ import annotations

from common import bootstrap

bootstrap.start(__name__)  # first: Ctrl-C is one line while the libraries below load, too

import argparse
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from common import files, paths
from inference import feature_maps, imaging
from ml import config, model, plots, runtime
from tracking import models, registry

EXPLAIN_DIR = paths.EXPLAIN_DIR
Answer = np.ndarray | imaging.ImageError  # per file: its image or probabilities, or why not


def load(uri: str, trust_code: bool) -> tuple[models.LoadedModel, str | None]:
    """The model and its registry version: a .keras file loads directly (no version); anything
    else is an MLflow model URI."""
    if uri.endswith(".keras"):
        cnn = model.load(Path(uri))
        return models.LoadedModel(lambda batch: cnn.predict(batch, verbose=0), cnn), None
    return models.load_model(uri, trust_code), models.resolved_version(uri)


def read_images(paths: list[Path]) -> list[Answer]:
    """Each file as the model sees it, or why it cannot be read, in the order given."""
    images: list[Answer] = []
    for path in paths:
        try:
            images.append(imaging.to_mnist(path))
        except imaging.ImageError as err:
            images.append(err)
    return images


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when every file was predicted, 1 when any was not."""
    params = config.load()
    default = f"models:/{params.tracking.registered_model}@{registry.CHAMPION}"
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", type=Path, help="PNG/JPG/... files, any size")
    parser.add_argument("--model", default=default, help=f"model URI or .keras file ({default})")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument(
        "--trust-model-code",
        action="store_true",
        help="load a model whose code differs from this checkout's (it runs as you)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="also save per image a figure of the CNN's filters and feature maps for it "
        f"({shown(EXPLAIN_DIR)}/<image name>.png)",
    )
    args = parser.parse_args(argv)
    runtime.configure()
    images = read_images(args.images)
    good = [image for image in images if isinstance(image, np.ndarray)]
    loaded, version = load(args.model, args.trust_model_code)
    probabilities = iter(np.asarray(loaded.predict(np.stack(good))) if good else [])
    answers = [
        image if isinstance(image, imaging.ImageError) else next(probabilities) for image in images
    ]
    figures = explain(loaded.cnn, args.images, images) if args.explain else {}
    show = as_json if args.json else as_lines
    show(Report(args.model, version, args.images, answers, figures))
    return 1 if len(good) < len(images) else 0


def explain(cnn: keras.Model, paths: list[Path], images: list[Answer]) -> dict[int, Path]:
    """Per readable image (by position), the figure saved of what the CNN computed for it."""
    saved: dict[int, Path] = {}
    for position, (path, image) in enumerate(zip(paths, images, strict=True)):
        if isinstance(image, np.ndarray):
            original = imaging.shrink(imaging.load_gray(path))
            figure = plots.cnn_views(feature_maps.views(cnn, image), original)
            saved[position] = unique_name(EXPLAIN_DIR / f"{path.stem}.png", saved.values())
            files.save_figure(figure, saved[position])
    return saved


def unique_name(wanted: Path, taken: Iterable[Path]) -> Path:
    """`wanted`, or wanted-2, -3... when an earlier file of this call has the same name."""
    taken = set(taken)
    candidate, number = wanted, 1
    while candidate in taken:
        number += 1
        candidate = wanted.with_stem(f"{wanted.stem}-{number}")
    return candidate


def shown(path: Path) -> str:
    """A path as the user can type it: relative to where they are when it is below."""
    relative = os.path.relpath(path)
    return path.as_posix() if relative.startswith("..") else relative


@dataclass(frozen=True)
class Report:
    uri: str
    version: str | None
    paths: list[Path]
    answers: list[Answer]  # per path: probabilities, or why the file could not be read
    figures: dict[int, Path]  # by position: the --explain figure saved

    def rows(self) -> Iterator[tuple[Path, Answer, Path | None]]:
        for position, (path, answer) in enumerate(zip(self.paths, self.answers, strict=True)):
            yield path, answer, self.figures.get(position)


def as_lines(report: Report) -> None:
    """The model once, then one line per file in the order given (errors on stderr)."""
    version = f" (version {report.version})" if report.version else ""
    print(f"model: {report.uri}{version}", flush=True)
    for path, answer, figure in report.rows():
        if isinstance(answer, imaging.ImageError):
            print(f"error: {answer}", file=sys.stderr, flush=True)
            continue
        explained = f", explained in {shown(figure)}" if figure else ""
        print(f"{path}: {int(answer.argmax())} ({answer.max():.1%}){explained}", flush=True)


def as_json(report: Report) -> None:
    entries = []
    for path, answer, figure in report.rows():
        entry: dict[str, object] = {"file": str(path)}
        if isinstance(answer, imaging.ImageError):
            entry["error"] = str(answer)
        else:
            entry["digit"] = int(answer.argmax())
            entry["probabilities"] = [round(float(p), 6) for p in answer]
        if figure:
            entry["explanation"] = str(figure)
        entries.append(entry)
    print(json.dumps({"model": report.uri, "version": report.version, "files": entries}, indent=2))


if __name__ == "__main__":
    bootstrap.run(main)
