"""Benchmark: what deeper conv blocks cost per epoch here, to decide what the search space offers.

    uv run python bench/bench_arch.py [--train-images 15000] [--epochs 3]

Trains the default params and three deeper variants of its two blocks, one after the other in one
run, on the first `--train-images` training images; reports the median seconds of the epochs after
the first (the first also compiles) and the ratio to the default. Writes bench/results/arch.json.
Needs the preprocess stage's output (`dvc repro preprocess`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from common import bootstrap

bootstrap.start(__name__)  # first: quiets the libraries below as they load

import provenance
from ml import config, data, runtime, training

RESULTS = Path(__file__).resolve().parent / "results" / "arch.json"
BOTH_DOUBLE = ["train.model.blocks.0.kernel_size=3", "train.model.blocks.0.convs=2"]
BATCH_NORM = ["train.model.blocks.0.batch_norm=true", "train.model.blocks.1.batch_norm=true"]
VARIANTS = {
    "default: one conv per block": [],
    "two convs in block 2": ["train.model.blocks.1.convs=2"],
    "two 3x3 convs in both blocks": [*BOTH_DOUBLE, "train.model.blocks.1.convs=2"],
    "the same with batch norm": [*BOTH_DOUBLE, "train.model.blocks.1.convs=2", *BATCH_NORM],
}


def epoch_seconds(
    splits: data.Splits,
    scaling: data.Scaling,
    device: runtime.Device,
    overrides: list[str],
    epochs: int,
) -> float:
    params = config.load(overrides=[*overrides, f"train.epochs={epochs}"])
    fitted = training.fit(splits, params.train, params.seed, scaling, device, verbose=0)
    return float(fitted.history["seconds"].iloc[1:].median())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-images", type=int, default=15_000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    full, scaling = training.load_inputs()
    n = args.train_images
    splits = data.Splits(data.Split(full.train.x[:n], full.train.y[:n]), full.val)
    device = runtime.configure()
    seconds = {
        name: epoch_seconds(splits, scaling, device, overrides, args.epochs)
        for name, overrides in VARIANTS.items()
    }
    base = seconds["default: one conv per block"]
    result = {
        "train_images": n,
        "epochs": args.epochs,
        "seconds_per_epoch": {name: round(s, 2) for name, s in seconds.items()},
        "ratio_to_default": {name: round(s / base, 2) for name, s in seconds.items()},
        **provenance.record(),
    }
    provenance.save(RESULTS, result)


if __name__ == "__main__":
    bootstrap.run(main)
