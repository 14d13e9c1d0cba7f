"""Benchmark: seconds per epoch of the training loop in this tree against a baseline commit.

    uv run python bench/bench_inputs.py                     # against 051fcc8 (tf.data inputs)
    uv run python bench/bench_inputs.py --baseline HEAD~3 --epochs 4 --rounds 3

Both arms train the params.yaml default on the preprocess stage's splits (run `dvc repro
preprocess` first) with the backend in force (KERAS_BACKEND, default tensorflow), each in a fresh
process, alternating A B A B so that a slow spell of the machine hits both. The baseline runs
from a git worktree of its commit. Epoch 1 (graph building) is left out of the per-epoch figure.
Results: bench/results/inputs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from common import bootstrap

bootstrap.start(__name__)

import provenance
from common.errors import PipelineError

RESULTS = Path(__file__).resolve().parent / "results" / "inputs.json"
# The last commit whose train stage fed Keras a tf.data pipeline.
BASELINE = "051fcc8"

# Runs inside either tree: training.fit where it exists, the train stage's fit before it did.
TIMER = """
import json, sys
try:  # src/ in packages
    from common.paths import PROCESSED_DIR
    from ml import config, runtime, training as loop
except ImportError:  # src/ flat, before 2026-12
    import runtime, config
    PROCESSED_DIR = config.PROCESSED_DIR
    try:
        import training as loop
    except ImportError:
        import train as loop
params = config.load()
splits, scaling = loop.load_inputs(PROCESSED_DIR)
recipe = params.train.model_copy(update={"epochs": int(sys.argv[1])})
fitted = loop.fit(splits, recipe, params.seed, scaling, runtime.configure(), verbose=0)
print(json.dumps({"seconds": fitted.history["seconds"].tolist(),
                  "val_accuracy": fitted.history["val_accuracy"].tolist()}))
"""


def time_epochs(tree: Path, epochs: int) -> dict[str, list[float]]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    out = subprocess.run(
        [sys.executable, "-c", TIMER, str(epochs)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:  # its output was captured: its last line is the reason
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise PipelineError(f"training in {tree} failed (exit {out.returncode}): {last}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def worktree(ref: str, into: Path) -> Path:
    """A checkout of `ref` that reads this tree's processed splits."""
    added = subprocess.run(
        ["git", "worktree", "add", "--detach", "-q", str(into), ref],
        cwd=provenance.ROOT,
        capture_output=True,
        text=True,
    )
    if added.returncode != 0:
        raise PipelineError(f"--baseline {ref}: not a commit here ({added.stderr.strip()})")
    (into / "data").mkdir(exist_ok=True)
    (into / "data" / "processed").symlink_to(provenance.ROOT / "data" / "processed")
    return into


def summary(runs: list[dict[str, list[float]]]) -> dict[str, object]:
    later = [s for run in runs for s in run["seconds"][1:]]
    return {
        "seconds_per_epoch_median": round(statistics.median(later), 3),
        # The fastest epoch: the least disturbed by whatever else the shared machine ran.
        "seconds_per_epoch_min": round(min(later), 3),
        "first_epoch_seconds": [round(run["seconds"][0], 2) for run in runs],
        "final_val_accuracy": [run["val_accuracy"][-1] for run in runs],
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default=BASELINE, help="git ref to compare against")
    parser.add_argument("--epochs", type=int, default=3, help="per run (epoch 1 is left out)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per arm, alternating")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = worktree(args.baseline, Path(tmp) / "baseline")
        arms: dict[str, list] = {"baseline": [], "this tree": []}
        try:
            for round_ in range(args.rounds):
                for name, tree in (("baseline", base), ("this tree", provenance.ROOT)):
                    print(f"round {round_ + 1}: {name} ...", flush=True)
                    arms[name].append(time_epochs(tree, args.epochs))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], check=False)
    before, after = summary(arms["baseline"]), summary(arms["this tree"])
    results = {
        **provenance.record(),
        "command": " ".join(["bench/bench_inputs.py", *sys.argv[1:]]),
        "backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "baseline": {"ref": args.baseline, **before},
        "this_tree": after,
        "ratio_this_over_baseline": round(
            after["seconds_per_epoch_median"] / before["seconds_per_epoch_median"], 3
        ),
    }
    provenance.save(RESULTS, results, echo=False)
    for name, arm in (("baseline " + args.baseline, before), ("this tree", after)):
        print(f"{name:>18}: {arm['seconds_per_epoch_median']:.2f} s/epoch")
    print(f"ratio (this tree / baseline): {results['ratio_this_over_baseline']}")


if __name__ == "__main__":
    bootstrap.run(main)
