"""Benchmark: candidate training recipes on the validation split, to choose a default without
looking at the test split.

    uv run python bench/bench_recipe.py --stop-after 1 \\
        --variant "batch 64=train.batch_size=64" \\
        --variant "warm-up 0.1=train.warmup_epochs=0.1 train.learning_rate=0.006"

Trains params.yaml's recipe and each `--variant` (a name, `=`, then space-separated -S
overrides) on every `--seed`, one after the other in one run. `--stop-after N` ends each run after
epoch N of its full schedule (the learning rate follows the whole schedule's curve up to there),
which is how a recipe's first epoch is compared at a fraction of a full run's cost. Reports the
validation accuracy after every epoch trained and each epoch's seconds, and appends the run, with
its commit and machine, to bench/results/recipe.json (earlier runs stay: a search is the sum of
its probes). `--skip-default` leaves params.yaml's recipe out, once an earlier run measured it.
Needs the preprocess stage's output (`dvc repro preprocess`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from common import bootstrap

bootstrap.start(__name__)  # first: quiets the libraries below as they load

import keras

import provenance
from common import files
from common.errors import PipelineError
from ml import config, data, runtime, training

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "recipe.json"
DEFAULT = "params.yaml"


class StopAfter(keras.callbacks.Callback):
    def __init__(self, epochs: int | None) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.model.stop_training = self.epochs is not None and epoch + 1 >= self.epochs


def variant(text: str) -> tuple[str, list[str]]:
    name, sep, overrides = text.partition("=")
    if not sep or not name.strip() or not overrides.split():
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=key=value [key=value ...]")
    return name.strip(), overrides.split()


def probe(
    params: config.Params,
    seed: int,
    stop_after: int | None,
    inputs: tuple[data.Splits, data.Scaling],
    device: runtime.Device,
) -> dict:
    keras.backend.clear_session()
    # A variant may set train.precision: the dtype policy is global, so set it for each probe.
    runtime.use_precision(params.train.precision, on_gpu=device.kind == "GPU")
    splits, scaling = inputs
    fitted = training.fit(
        splits, params.train, seed, scaling, device, callbacks=[StopAfter(stop_after)], verbose=0
    )
    history = fitted.history
    return {
        "seed": seed,
        "val_accuracy": [round(float(v), 4) for v in history["val_accuracy"]],
        "epoch_seconds": [round(float(s), 1) for s in history["seconds"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", type=variant, default=[])
    parser.add_argument("--seed", action="append", type=int, help="default: 0 and 1")
    parser.add_argument("--stop-after", type=int, help="epochs to train (default: all)")
    parser.add_argument(
        "--skip-default", action="store_true", help="only the variants, not params.yaml's recipe"
    )
    args = parser.parse_args()
    recipes = args.variant if args.skip_default else [(DEFAULT, []), *args.variant]
    if not recipes:
        parser.error("--skip-default leaves nothing to train: add a --variant")
    # Everything that can be wrong is checked before the first training: each variant's
    # overrides, the inputs, and the results file the run is appended to.
    planned = [(name, overrides, config.load(overrides=overrides)) for name, overrides in recipes]
    for name, _, params in planned:
        if params.train.backend != keras.backend.backend():
            raise PipelineError(
                f"{name}: train.backend={params.train.backend}, but this run loaded "
                f"{keras.backend.backend()}: one backend per run; run that variant alone "
                f"(--skip-default) with KERAS_BACKEND={params.train.backend}"
            )
    inputs, device = training.load_inputs(), runtime.configure()
    earlier = earlier_runs()
    results: dict[str, object] = {"stop_after": args.stop_after, "variants": {}}
    for name, overrides, params in planned:
        runs = []
        for seed in args.seed or [0, 1]:
            runs.append(probe(params, seed, args.stop_after, inputs, device))
            print(f"{name}, seed {seed}: val_accuracy {runs[-1]['val_accuracy']}", flush=True)
        results["variants"][name] = {"overrides": overrides, "runs": runs}
    run = {**results, **provenance.record()}
    # The file holds every earlier probe too: only this run is worth showing.
    provenance.save(RESULTS, {"runs": [*earlier, run]}, echo=False)
    print(json.dumps(run, indent=2))
    print(f"appended to {RESULTS.relative_to(ROOT)} ({len(earlier) + 1} runs)")


def earlier_runs() -> list[dict]:
    if not RESULTS.exists():
        return []
    fix = f"move it aside (or `git checkout {RESULTS.relative_to(ROOT)}`) and rerun"
    earlier = files.read_json(RESULTS, fix)
    if not isinstance(earlier, dict) or not isinstance(earlier.get("runs"), list):
        raise PipelineError(f'{RESULTS}: not a list of runs under "runs"; {fix}')
    return earlier["runs"]


if __name__ == "__main__":
    bootstrap.run(main)  # a bad override is one line naming the key, not a traceback
