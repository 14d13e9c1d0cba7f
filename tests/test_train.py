"""train: the one training loop, on tiny synthetic data through the real code path."""

from __future__ import annotations

import hashlib
import json

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest

from conftest import run_stage
from ml import config, model, runtime, training
from mnist_fakes import UNIT
from tracking import store


def tiny(**changes) -> config.TrainParams:
    base = config.load().train
    return base.model_copy(update={"batch_size": 32, "epochs": 2, **changes})


def test_fit_logs_each_epochs_metrics_learning_rate_and_time(tiny_splits, device):
    fitted = training.fit(
        tiny_splits, tiny(epochs=3), seed=0, scaling=UNIT, device=device, verbose=0
    )
    assert list(fitted.history["epoch"]) == [1, 2, 3]
    for column in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"):
        assert fitted.history[column].notna().all(), column
    assert fitted.history["lr"].is_monotonic_decreasing  # past warm-up, cosine decays
    assert fitted.final()["epochs"] == 3


def test_fit_learns_the_synthetic_digits(tiny_splits, device):
    fitted = training.fit(
        tiny_splits, tiny(epochs=4), seed=0, scaling=UNIT, device=device, verbose=0
    )
    assert fitted.final()["val_accuracy"] >= 0.9  # chance is 0.1


def test_with_weight_averaging_the_model_ends_with_the_weights_validation_saw(tiny_splits, device):
    averaged = training.fit(
        tiny_splits, tiny(ema_momentum=0.9), seed=0, scaling=UNIT, device=device
    )
    plain = training.fit(tiny_splits, tiny(ema_momentum=None), seed=0, scaling=UNIT, device=device)
    for fitted in (averaged, plain):
        # evaluate, not -log(predict): Keras takes the loss from the softmax's logits, which
        # differs from the log of a probability near 1 in the fourth digit.
        loss, _ = fitted.model.evaluate(tiny_splits.val.x, tiny_splits.val.y, verbose=0)
        assert loss == pytest.approx(fitted.final()["val_loss"], rel=1e-4)
    assert averaged.final()["val_loss"] != plain.final()["val_loss"]


def test_label_smoothing_trains_against_soft_targets_and_accuracy_still_counts_digits(
    tiny_splits, device
):
    smoothing = 0.2
    fitted = {
        s: training.fit(
            tiny_splits, tiny(epochs=4, label_smoothing=s), seed=0, scaling=UNIT, device=device
        )
        for s in (0.0, smoothing)
    }
    probabilities = fitted[smoothing].model.predict(tiny_splits.val.x, verbose=0)
    right = np.mean(probabilities.argmax(axis=1) == tiny_splits.val.y)
    assert fitted[smoothing].final()["val_accuracy"] == pytest.approx(right)
    # Cross-entropy never falls below the targets' own entropy: soft targets have a floor that
    # the hard labels' loss, once learnt, is under.
    soft = np.array([1 - smoothing + smoothing / 10] + [smoothing / 10] * 9)
    floor = -np.sum(soft * np.log(soft))
    assert fitted[smoothing].final()["val_loss"] >= floor
    assert fitted[0.0].final()["val_loss"] < floor


@pytest.mark.parametrize("augment", [config.Augment(), config.Augment(shift=0.1, rotate_deg=10)])
def test_fit_is_deterministic_on_cpu_for_a_fixed_seed(tiny_splits, device, augment):
    runs = [
        training.fit(
            tiny_splits, tiny(augment=augment), seed=s, scaling=UNIT, device=device
        ).history
        for s in (1, 1, 2)
    ]
    columns = ["loss", "accuracy", "val_loss", "val_accuracy"]
    pd.testing.assert_frame_equal(runs[0][columns], runs[1][columns])
    assert not runs[0][columns].equals(runs[2][columns])


def test_two_trainings_with_one_seed_save_one_md5(tiny_splits, device, tmp_path):
    """The same weights are the same file: DVC stores a retrained, identical model once."""
    for name in ("first.keras", "second.keras"):
        keras.backend.clear_session()  # layer names restart, as in a new process
        fitted = training.fit(tiny_splits, tiny(epochs=1), seed=1, scaling=UNIT, device=device)
        model.save(fitted.model, tmp_path / name)
    first, second = ((tmp_path / name).read_bytes() for name in ("first.keras", "second.keras"))
    assert hashlib.md5(first).hexdigest() == hashlib.md5(second).hexdigest()
    reloaded = model.load(tmp_path / "first.keras")
    for saved, trained in zip(reloaded.get_weights(), fitted.model.get_weights(), strict=True):
        np.testing.assert_array_equal(saved, trained)


def test_fit_trains_on_augmented_batches(tiny_splits, device):
    augment = config.Augment(shift=0.1, rotate_deg=10)
    runs = [
        training.fit(tiny_splits, tiny(augment=a), seed=1, scaling=UNIT, device=device).history[
            "loss"
        ]
        for a in (config.Augment(), augment)
    ]
    assert not runs[0].equals(runs[1])


def test_tensorflow_on_cpu_keeps_xla_off(tiny_splits, device):
    if (device.backend, device.kind) != ("tensorflow", "CPU"):
        pytest.skip(f"XLA is expected on {device.describe()}")
    fitted = training.fit(
        tiny_splits, tiny(epochs=1), seed=0, scaling=UNIT, device=device, verbose=0
    )
    assert fitted.model.jit_compile is False


def test_constant_schedule_keeps_the_learning_rate(tiny_splits, device):
    params = tiny(lr_schedule="constant", learning_rate=0.01)
    fitted = training.fit(tiny_splits, params, seed=0, scaling=UNIT, device=device, verbose=0)
    assert fitted.history["lr"].tolist() == pytest.approx([0.01, 0.01])


# A stage says only its own words: no TensorFlow/absl start-up lines, no MLflow chatter.
def test_train_and_evaluate_stages_run_end_to_end_on_tiny_data(project, mirror):
    (project / "data").mkdir(exist_ok=True)
    (project / "data" / "raw").symlink_to(mirror[0])
    for stage in ("preprocess", "train", "evaluate"):
        # A sample every 0.5 s, not 2: each stage holds its run open for several seconds.
        result = run_stage(project, stage, env={"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.5"})
        assert result.returncode == 0, f"{stage}: {result.stderr[-2000:]}"
        # No TensorFlow/absl lines, no library warnings, not even MLflow's "Created version".
        assert result.stderr == "", result.stderr
    history = pd.read_csv(project / "reports" / "train" / "history.csv")
    assert list(history["epoch"]) == [1] and "seconds" not in history  # no wall clock in outputs
    scores = json.loads((project / "reports" / "eval" / "metrics.json").read_text())
    assert set(scores) == {"test_accuracy", "test_loss", "test_macro_f1"}
    trained = json.loads((project / "reports" / "train" / "metrics.json").read_text())
    assert set(trained) == {
        "train_accuracy",
        "train_loss",
        "val_accuracy",
        "val_loss",
        "epochs",
        "params",
    }
    confusion = pd.read_csv(project / "reports" / "eval" / "confusion.csv")
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) == 100
    for png in ("confusion", "misclassified", "predictions", "feature_maps"):
        assert (project / "reports" / "eval" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    assert (project / "models" / "model.keras").stat().st_size > 10_000
    assert_one_complete_mlflow_run(scores["test_accuracy"])


def assert_one_complete_mlflow_run(test_accuracy: float) -> None:
    """train and evaluate logged into one run; the model is registered as its first version."""
    mlflow.set_tracking_uri(store.tracking_uri())
    (run,) = mlflow.search_runs(experiment_names=["mnist-cnn"], output_format="list")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_accuracy"] == pytest.approx(test_accuracy)
    # Curves in the UI's "epoch" section, then a few single values; per-digit scores are a table.
    curves = {f"epoch/{name}" for name in ("loss", "accuracy", "val_loss", "val_accuracy", "lr")}
    singles = {"train_seconds", "test_accuracy", "test_loss", "test_macro_f1"}
    costs = {"latency_ms", "params", "size_kb"}  # what serving it costs, as tune.objectives name
    system = {key for key in run.data.metrics if key.startswith("system/")}
    assert set(run.data.metrics) - system == curves | singles | costs
    # MLflow samples the machine while the run is open (its System metrics tab).
    assert any(key.endswith("/cpu_utilization_percentage") for key in system), system
    assert int(run.data.tags["model_params"]) > 1000
    logged = {
        a.path
        for folder in ("eval", "train", "preprocess")
        for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, folder)
    }
    assert {
        "eval/confusion.png",
        "eval/misclassified.png",
        "eval/predictions.png",
        "eval/feature_maps.png",
        "eval/per_digit.json",
        "train/curves.png",
        "preprocess/samples.png",
    } <= logged
    version = mlflow.MlflowClient().get_model_version_by_alias("mnist-cnn", "challenger")
    assert str(version.version) == "1" and version.run_id == run.info.run_id


def test_mixed_precision_trains_with_a_float32_output(tiny_splits):
    """What a GPU may run, here on whatever device there is: 16-bit compute, float32 output."""
    try:
        device = runtime.configure("mixed_bfloat16")
        fitted = training.fit(tiny_splits, tiny(epochs=1), seed=0, scaling=UNIT, device=device)
        assert fitted.model.layers[1].dtype_policy.name == "mixed_bfloat16"
        # Batched as validation is: the sums then run in the same order (float32 noise aside).
        probs = fitted.model.predict(tiny_splits.val.x, batch_size=training.VAL_BATCH, verbose=0)
    finally:
        runtime.configure()  # the policy is process-wide: back to float32 for the other tests
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    assert device.describe().startswith(f"{device.backend} on {device.kind}")
    assert device.describe().endswith(", mixed_bfloat16")


def test_weight_decay_shrinks_the_weights_each_step(tiny_splits, device):
    def kernel_norm(weight_decay: float | None) -> float:
        params = tiny(epochs=1, ema_momentum=None, weight_decay=weight_decay)
        fitted = training.fit(tiny_splits, params, seed=0, scaling=UNIT, device=device, verbose=0)
        return sum(float(np.sum(np.square(w))) for w in fitted.model.get_weights())

    # 8 steps of learning rates up to 0.004: decay 0.9 takes about 1.5% off every weight (3% off
    # the squared norm), more than the steps' gradients change it by; None (Adam's) takes none.
    assert kernel_norm(0.9) < 0.99 * kernel_norm(None)
    assert training.optimizer(tiny(optimizer="adamw"), 1).weight_decay == pytest.approx(0.004)
    assert training.optimizer(tiny(optimizer="adamw", weight_decay=0.0), 1).weight_decay == 0.0
