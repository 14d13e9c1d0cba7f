"""Stage train: data/processed/{train,val}.npz + params.train -> models/model.keras, reports/train/.

The training loop itself is training.fit, which the tuner and the benchmarks share.
"""

from __future__ import annotations

from common import bootstrap

# First: Ctrl-C is one line while the libraries below load, and Keras loads params' backend.
bootstrap.start(__name__, backend_from_params=True)

from pathlib import Path

from common import files, paths, redact
from ml import config, data, model, plots, runtime, training
from tracking import lineage, logs, pipeline_run, store


def save_outputs(fitted: training.Fitted, model_file: Path, report_dir: Path) -> None:
    with files.atomic_path(model_file) as tmp:
        model.save(fitted.model, tmp)
    # Without the epochs' wall-clock seconds: a rerun writes the same bytes (MLflow has the time).
    with files.atomic_path(report_dir / "history.csv") as tmp:
        fitted.history.drop(columns="seconds").to_csv(tmp, index=False, float_format="%.6g")
    files.write_json(report_dir / "metrics.json", fitted.final())
    files.save_figure(plots.training_curves(fitted.history), report_dir / "curves.png")


def track_inputs(splits: data.Splits, digest: str) -> None:
    for name, split in (("train", splits.train), ("val", splits.val)):
        context = "training" if name == "train" else "validation"
        source = paths.PROCESSED_DIR / f"{name}.npz"
        logs.log_dataset(split, f"mnist-{name}", source, context, digest)
    logs.log_files(sorted(paths.PREPROCESS_REPORTS.glob("*")), "preprocess")


def main() -> None:
    params = config.load_from_cli(__doc__.splitlines()[0])
    fitted = train(params, paths.MODEL_FILE, paths.TRAIN_REPORTS)
    final = fitted.final()
    print(
        f"{fitted.arch}: val_accuracy {final['val_accuracy']:.4f} after {final['epochs']} "
        f"epoch{'s' if final['epochs'] != 1 else ''} ({fitted.seconds:.0f} s) "
        f"-> {paths.MODEL_FILE.relative_to(paths.ROOT)}"
    )


def train(params: config.Params, model_file: Path, report_dir: Path) -> training.Fitted:
    """The stage's work, tracked in one MLflow run: bench/bench_tracking.py times this very code."""
    splits, scaling = training.load_inputs()
    device = runtime.configure(params.train.precision)
    digest = data.digest_dir(paths.PROCESSED_DIR)
    tags = lineage.lineage(params, digest, device.describe())
    with pipeline_run.pipeline_run(params, tags) as run_id:
        print(f"MLflow run {run_id} in {redact.uri(store.tracking_uri())}")
        print(
            f"training on {device.describe()}: {len(splits.train)} images, "
            f"validating on {len(splits.val)}"
        )
        track_inputs(splits, digest)
        fitted = training.fit(
            splits,
            params.train,
            params.seed,
            scaling,
            device,
            callbacks=[logs.EpochMetrics()],
            verbose=2,
        )
        save_outputs(fitted, model_file, report_dir)
        pipeline_run.mark_trained(model_file)  # evaluate finds this run by the model's digest
        logs.log_training_summary(fitted.seconds, fitted.model.count_params())
        logs.log_files([report_dir / "curves.png", report_dir / "history.csv"], "train")
    return fitted


if __name__ == "__main__":
    bootstrap.run(main)
