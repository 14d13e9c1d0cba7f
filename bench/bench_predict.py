"""Benchmark: predict.py's accuracy on digits as people have them, per distortion family.

    uv run python bench/bench_predict.py                  # needs `dvc repro` (model and MNIST)
    uv run python bench/bench_predict.py --per-family 100 --baseline 080c4ba  # a year back

Builds image files from the first N MNIST *test* digits (the model never trained on them) with
each family of bench/photos.py, converts them with this checkout's src/inference/imaging.py and
with the baseline commit's, and predicts both with models/model.keras. The families that hold no
single digit (photos.REFUSED, e.g. two digits side by side) count refusals: the right answer.
Real handwriting that is not MNIST: UCI's 1,797 8x8 scans (scikit-learn's copy), upscaled, read
by both and by a plain resize to 28x28. Writes
bench/results/predict.json and a contact sheet, bench/results/predict_sheet.png: per family,
the input file and the 28x28 image the model saw.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from common import bootstrap

bootstrap.start(__name__)  # first: quiets the libraries below as they load

import photos
import provenance
from common import paths
from inference import imaging
from ml import data, model, runtime

RESULTS = Path(__file__).resolve().parent / "results"
Converter = Callable[[Path], np.ndarray]


def baseline_converter(commit: str, scratch: Path) -> Converter:
    """`to_mnist` of imaging.py as it was at `commit` (src/inference/ since 27f8b0d, else src/)."""
    for where in ("src/inference/imaging.py", "src/imaging.py"):
        shown = subprocess.run(
            ["git", "show", f"{commit}:{where}"],
            cwd=provenance.ROOT,
            capture_output=True,
            text=True,
        )
        if shown.returncode == 0:
            break
    source = shown.stdout.replace("from errors import", "from common.errors import")
    path = scratch / "imaging_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("imaging_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.to_mnist


def convert_all(convert: Converter, paths: list[Path]) -> tuple[np.ndarray, int]:
    """Every file as the model sees it; a file the converter refuses counts as wrong (blank)."""
    images, refused = [], 0
    for path in paths:
        try:
            images.append(convert(path))
        except Exception:  # the baseline may fail in ways today's code names; all count as wrong
            images.append(np.zeros((28, 28, 1), np.uint8))
            refused += 1
    return np.stack(images), refused


def small_scans(directory: Path, scale: int) -> tuple[list[Path], np.ndarray]:
    """Real handwriting that is not MNIST: the 1,797 8x8 scans of UCI's optical digits (43
    writers; bundled with scikit-learn), dark on white, upscaled `scale` times as a small scan
    is when someone enlarges it."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(digits.images):
        page = Image.fromarray(np.uint8(255 - image / 16 * 255))
        paths.append(directory / f"{index:05d}.png")
        page.resize((8 * scale, 8 * scale), Image.Resampling.BILINEAR).save(paths[-1])
    return paths, digits.target


def plain_resize(path: Path) -> np.ndarray:
    """The least a reader must beat: the whole image resized to 28x28, inverted to MNIST's
    white on black."""
    with Image.open(path) as image:
        small = image.convert("L").resize((28, 28), Image.Resampling.BILINEAR)
    return (255 - np.asarray(small))[..., np.newaxis]


def accuracy(cnn, images: np.ndarray, labels: np.ndarray) -> float:
    predicted = cnn.predict(images, batch_size=1024, verbose=0).argmax(axis=1)
    return round(float(np.mean(predicted == labels)), 4)


def contact_sheet(rows: list[tuple[str, Path, np.ndarray]], path: Path) -> None:
    """One row per family: its name, the input file, and the 28x28 image the model saw."""
    tile, label_w = 168, 210
    sheet = Image.new("RGB", (label_w + 2 * tile, tile * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (name, source, seen) in enumerate(rows):
        top = row * tile
        draw.text((8, top + tile // 2 - 6), name, fill="black")
        with Image.open(source) as image:
            shown = image.convert("RGBA")
        checker = Image.new("RGBA", shown.size, (200, 200, 255, 255))  # shows transparency
        shown = Image.alpha_composite(checker, shown).convert("RGB")
        shown.thumbnail((tile - 8, tile - 8))
        sheet.paste(shown, (label_w + 4, top + 4))
        seen_image = Image.fromarray(seen[..., 0]).resize((tile - 8, tile - 8), Image.NEAREST)
        sheet.paste(seen_image.convert("RGB"), (label_w + tile + 4, top + 4))
    draw.text((label_w + 4, 0), "input file", fill="red")
    draw.text((label_w + tile + 4, 0), "what the model saw", fill="red")
    sheet.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-family", type=int, default=500, help="test digits per family")
    parser.add_argument("--baseline", default="335bdb6", help="commit whose imaging.py to compare")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    origin = provenance.record()  # before the contact sheet is written: it is a tracked file
    runtime.configure()
    test = data.load_split(paths.PROCESSED_DIR / "test.npz")
    digits, labels = test.x[: args.per_family, ..., 0], test.y[: args.per_family]
    cnn = model.load(paths.MODEL_FILE)
    families, rows = {}, []
    with tempfile.TemporaryDirectory() as scratch:
        old = baseline_converter(args.baseline, Path(scratch))
        for index, name in enumerate(photos.FAMILIES):
            family_files = photos.write_family(
                name, digits, Path(scratch) / str(index), args.seed + index
            )
            new_images, new_refused = convert_all(imaging.to_mnist, family_files)
            old_images, old_refused = convert_all(old, family_files)
            families[name] = {
                "accuracy": accuracy(cnn, new_images, labels),
                "refused": new_refused,
                "baseline_accuracy": accuracy(cnn, old_images, labels),
                "baseline_refused": old_refused,
            }
            print(f"{name:22} {json.dumps(families[name])}", flush=True)
            rows.append((name, family_files[0], new_images[0]))
        for index, name in enumerate(photos.REFUSED, start=len(photos.FAMILIES)):
            family_files = photos.write_family(
                name, digits, Path(scratch) / str(index), args.seed + index
            )
            families[name] = {
                "refused": convert_all(imaging.to_mnist, family_files)[1],
                "baseline_refused": convert_all(old, family_files)[1],
                "of": len(family_files),
            }
            print(f"{name:22} {json.dumps(families[name])}", flush=True)
        scans, scan_labels = small_scans(Path(scratch) / "uci", scale=4)
        real = {
            "accuracy": accuracy(cnn, convert_all(imaging.to_mnist, scans)[0], scan_labels),
            "baseline_accuracy": accuracy(cnn, convert_all(old, scans)[0], scan_labels),
            "plain_resize_accuracy": accuracy(
                cnn, convert_all(plain_resize, scans)[0], scan_labels
            ),
            "images": len(scans),
        }
        print(f"{'UCI 8x8 scans, x4':22} {json.dumps(real)}", flush=True)
        rows.append(("UCI 8x8 scan, x4", scans[0], convert_all(imaging.to_mnist, scans[:1])[0][0]))
        RESULTS.mkdir(exist_ok=True)
        contact_sheet(rows, RESULTS / "predict_sheet.png")
    results = {
        "command": " ".join(["python", "bench/bench_predict.py", *sys.argv[1:]]),
        "digits_per_family": args.per_family,
        "baseline_commit": args.baseline,
        "families": families,
        "real_small_scans": real,
        "model": {
            "file": "models/model.keras",
            "sha256": data.sha256(paths.MODEL_FILE.read_bytes()),
        },
        **origin,
    }
    provenance.save(RESULTS / "predict.json", results, echo=False)


if __name__ == "__main__":
    bootstrap.run(main)
