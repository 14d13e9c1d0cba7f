"""Stage preprocess: data/raw/*.gz -> data/processed/{train,val,test}.npz, scaling, summary, grid.

Images stay uint8 (lossless, 4x smaller than float32); the scaling chosen here is written to
scaling.json and becomes the model's first layer, so training, evaluation, prediction and serving
all feed raw 0-255 pixels and can never disagree about normalisation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

import config
import data
import files
import plots
from errors import exit_on_error

SAMPLES_PNG = config.REPORTS_DIR / "preprocess" / "samples.png"
SUMMARY_JSON = config.REPORTS_DIR / "preprocess" / "summary.json"


def carve_validation(full: data.Split, val_size: int, seed: int) -> data.Splits:
    """Hold out `val_size` training images, stratified by digit: tuning never needs the test set."""
    train_idx, val_idx = train_test_split(
        np.arange(len(full)), test_size=val_size, stratify=full.y, random_state=seed
    )
    return data.Splits(
        train=data.Split(full.x[train_idx], full.y[train_idx]),
        val=data.Split(full.x[val_idx], full.y[val_idx]),
    )


def scaling(train: data.Split, method: str) -> dict[str, float]:
    """Return (scale, offset) such that pixel * scale + offset is the model's input."""
    if method == "unit":
        return {"scale": 1 / 255, "offset": 0.0}
    mean, std = float(train.x.mean()), float(train.x.std())
    return {"scale": 1 / std, "offset": -mean / std}


def summarize(splits: dict[str, data.Split]) -> dict[str, dict[str, int]]:
    """Images per digit per split: a skewed split shows up here before it skews a metric."""
    return {
        name: {"total": len(split)}
        | {str(digit): int(count) for digit, count in enumerate(np.bincount(split.y, minlength=10))}
        for name, split in splits.items()
    }


def write_outputs(splits: dict[str, data.Split], scale: dict[str, float], out_dir: Path) -> None:
    for name, split in splits.items():
        data.save_split(out_dir / f"{name}.npz", split)
    files.write_json(out_dir / "scaling.json", scale)


@exit_on_error
def main() -> None:
    params = config.load()
    full = data.read_pair(config.RAW_DIR, "train")
    test = data.read_pair(config.RAW_DIR, "t10k")
    carved = carve_validation(full, params.preprocess.val_size, params.seed)
    splits = {"train": carved.train, "val": carved.val, "test": test}
    write_outputs(splits, scaling(carved.train, params.preprocess.scale), config.PROCESSED_DIR)
    summary = summarize(splits)
    files.write_json(SUMMARY_JSON, summary)
    files.save_figure(
        plots.digit_grid(carved.train.x[:20], [f"{d}" for d in carved.train.y[:20]]), SAMPLES_PNG
    )
    print(
        " ".join(f"{name}={counts['total']}" for name, counts in summary.items()),
        f"-> {config.PROCESSED_DIR.relative_to(config.ROOT)}/",
    )


if __name__ == "__main__":
    main()
