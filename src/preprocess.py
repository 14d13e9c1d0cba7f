"""Stage preprocess: data/raw/*.gz -> data/processed/{train,val,test}.npz, scaling, summary, grid.

With `preprocess.feedback` on, the corrections collected by serve.py (data/feedback/corrections)
become data/processed/feedback.npz, a slice that evaluate reports on its own; with `train`, they
also join the training split (never validation or test). Off, feedback.npz is empty.

Images stay uint8 (lossless, 4x smaller than float32); the scaling chosen here is written to
scaling.json and becomes the model's first layer, so training, evaluation, prediction and serving
all feed raw 0-255 pixels and can never disagree about normalisation.
"""

from __future__ import annotations

from common import bootstrap

bootstrap.start(__name__)  # first: Ctrl-C is one line while the libraries below load, too

import dataclasses
from pathlib import Path

import numpy as np

from common import files, paths
from inference import feedback
from ml import config, data, plots

SAMPLES_PNG = paths.PREPROCESS_REPORTS / "samples.png"
SUMMARY_JSON = paths.PREPROCESS_REPORTS / "summary.json"


def summarize(splits: dict[str, data.Split]) -> dict[str, dict[str, int]]:
    """Images per digit per split: a skewed split shows up here before it skews a metric."""
    return {
        name: {"total": len(split)}
        | {str(digit): int(count) for digit, count in enumerate(np.bincount(split.y, minlength=10))}
        for name, split in splits.items()
    }


def write_outputs(splits: dict[str, data.Split], scaling: data.Scaling, out_dir: Path) -> None:
    for name, split in splits.items():
        data.save_split(out_dir / f"{name}.npz", split)
    files.write_json(out_dir / "scaling.json", dataclasses.asdict(scaling))


def collected(mode: str) -> data.Split:
    """The corrections as a split (images (N, 28, 28, 1)); none when feedback is off."""
    if mode == "off" or not paths.FEEDBACK_DIR.is_dir():
        images, labels = np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8)
    else:
        images, labels = feedback.read_all(paths.FEEDBACK_DIR)
    return data.Split(images[..., np.newaxis], labels)


def main() -> None:
    params = config.load()
    full = data.read_pair(paths.RAW_DIR, "train")
    test = data.read_pair(paths.RAW_DIR, "t10k")
    carved = data.carve_validation(full, params.preprocess.val_size, params.seed)
    mode = params.preprocess.feedback
    corrections = collected(mode)
    train = data.joined(carved.train, corrections) if mode == "train" else carved.train
    splits = {"train": train, "val": carved.val, "test": test, "feedback": corrections}
    # Scaled by MNIST's training images alone: a few corrections never move the model's input.
    write_outputs(splits, data.scaling(carved.train, params.preprocess.scale), paths.PROCESSED_DIR)
    summary = summarize(splits)
    files.write_json(SUMMARY_JSON, summary)
    files.save_figure(
        plots.digit_grid(carved.train.x[:20], [f"{d}" for d in carved.train.y[:20]]), SAMPLES_PNG
    )
    print(
        " ".join(f"{name}={counts['total']}" for name, counts in summary.items()),
        f"-> {paths.PROCESSED_DIR.relative_to(paths.ROOT)}/",
    )


if __name__ == "__main__":
    bootstrap.run(main)
