"""Stage evaluate: models/model.keras + data/processed/test.npz -> reports/eval/.

The only stage that reads the test split: metrics.json, per-digit report, the confusion matrix
(CSV for DVC's confusion template, and PNG), a gallery of mistakes, a grid of predictions, and the
CNN's filters and feature maps for one test digit.
"""

from __future__ import annotations

from common import bootstrap

# First: Ctrl-C is one line while the libraries below load, and Keras loads params' backend.
bootstrap.start(__name__, backend_from_params=True)

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn import metrics as skm

from common import files, paths
from inference import feature_maps
from ml import config, data, footprint, model, plots, runtime
from tracking import logs, models, pipeline_run, registry, store


@dataclass(frozen=True)
class Evaluation:
    labels: np.ndarray  # true digit per test image
    probs: np.ndarray  # (N, 10) predicted probabilities

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        return self.probs.max(axis=1)

    @cached_property
    def metrics(self) -> dict[str, float]:
        """The headline scalars, for DVC's metrics and MLflow's; per-digit precision, recall and
        F1 are a table (`per_digit`), not thirty more scalars to scroll past."""
        headline = {
            "test_accuracy": skm.accuracy_score(self.labels, self.predicted),
            "test_loss": skm.log_loss(self.labels, self.probs, labels=range(10)),
            "test_macro_f1": skm.f1_score(self.labels, self.predicted, average="macro"),
        }
        return {key: round(float(value), 6) for key, value in headline.items()}

    def per_digit(self) -> pd.DataFrame:
        precision, recall, f1, support = skm.precision_recall_fscore_support(
            self.labels, self.predicted, labels=range(10), zero_division=0
        )
        return pd.DataFrame(
            {
                "digit": range(10),
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "support": support,
            }
        )

    def confusion(self) -> np.ndarray:
        return skm.confusion_matrix(self.labels, self.predicted, labels=range(10))


def evaluate(cnn: keras.Model, test: data.Split) -> Evaluation:
    return Evaluation(test.y, cnn.predict(test.x, batch_size=1024, verbose=0))


def mistakes_figure(test: data.Split, ev: Evaluation, count: int) -> Figure:
    """The misclassified digits the model was most sure about: the most instructive errors."""
    wrong = np.flatnonzero(ev.predicted != ev.labels)
    worst = wrong[np.argsort(-ev.confidence[wrong])][:count]
    titles = [f"{ev.labels[i]}→{ev.predicted[i]} {ev.confidence[i]:.0%}" for i in worst]
    return plots.digit_grid(test.x[worst], titles, colors=["red"] * len(worst))


def predictions_figure(test: data.Split, ev: Evaluation, count: int) -> Figure:
    """The first test digits with the model's guess: a quick sanity look at typical inputs."""
    titles = [f"{ev.predicted[i]} {ev.confidence[i]:.0%}" for i in range(count)]
    colors = ["black" if ev.predicted[i] == ev.labels[i] else "red" for i in range(count)]
    return plots.digit_grid(test.x[:count], titles, colors=colors)


def feedback_scores(cnn: keras.Model, corrections: data.Split) -> dict[str, float]:
    """Accuracy on the corrections people made on serve.py's page, a slice of its own (empty
    when preprocess.feedback is off or none were collected): never mixed into the test score."""
    if not len(corrections):
        return {}
    predicted = cnn.predict(corrections.x, verbose=0).argmax(axis=1)
    accuracy = float(np.mean(predicted == corrections.y))
    return {"feedback_accuracy": round(accuracy, 6), "feedback_images": len(corrections)}


def write_reports(
    cnn: keras.Model,
    test: data.Split,
    ev: Evaluation,
    scores: dict[str, float],
    gallery_size: int,
    out: Path,
) -> None:
    files.write_json(out / "metrics.json", scores)
    with files.atomic_path(out / "per_digit.csv") as tmp:
        ev.per_digit().to_csv(tmp, index=False, float_format="%.6f")
    with files.atomic_path(out / "confusion.csv") as tmp:  # one row per image: DVC's template
        pd.DataFrame({"actual": ev.labels, "predicted": ev.predicted}).to_csv(tmp, index=False)
    files.save_figure(plots.confusion_matrix(ev.confusion()), out / "confusion.png")
    files.save_figure(mistakes_figure(test, ev, gallery_size), out / "misclassified.png")
    files.save_figure(predictions_figure(test, ev, gallery_size), out / "predictions.png")
    # The first test digit: the same one in every run, so runs' figures compare side by side.
    files.save_figure(plots.cnn_views(feature_maps.views(cnn, test.x[0])), out / "feature_maps.png")


def track(
    cnn: keras.Model,
    splits: dict[str, data.Split],
    ev: Evaluation,
    scores: dict[str, float],
    params: config.Params,
) -> str:
    """Log test metrics, tables, figures and the model; register it; apply the alias policy."""
    for name, split_file in (("mnist-test", paths.TEST_SPLIT), ("feedback", paths.FEEDBACK_SPLIT)):
        if len(splits[name]):
            digest = data.sha256(split_file.read_bytes())
            logs.log_dataset(splits[name], name, split_file, "testing", digest)
    logs.log_metrics(scores)
    logs.log_table(ev.per_digit(), "eval/per_digit.json")
    confusion = pd.DataFrame(ev.confusion(), columns=[f"pred_{d}" for d in range(10)])
    logs.log_table(confusion.assign(true=range(10)), "eval/confusion_matrix.json")
    report = paths.EVAL_REPORTS
    logs.log_files([*sorted(report.glob("*.png")), report / "metrics.json"], "eval")
    # What it costs to serve, beside what tune.py --register records: not in metrics.json, which
    # holds only what the same params, data and seed reproduce (latency is this machine's).
    costs = footprint.measure_saved(cnn, paths.MODEL_FILE, splits["mnist-test"].x[0]).as_dict()
    logs.log_metrics(costs)
    serving = (
        f"serving: {costs['latency_ms']:.3g} ms per image on this machine, "
        f"{costs['params']:,} weights, {costs['size_kb']:,.0f} KB"
    )
    return f"{serving}\n{register(cnn, splits['mnist-test'].x[:8], ev, params, costs)}"


def register(
    cnn: keras.Model,
    sample: np.ndarray,
    ev: Evaluation,
    params: config.Params,
    costs: dict[str, float],
) -> str:
    """Register the model and apply the alias policy; say what happened, refusal included."""
    name = params.tracking.registered_model
    accuracy, floor = ev.metrics["test_accuracy"], params.tracking.champion_floor
    try:
        with registry.allowed_to_change(name):
            version = models.log_and_register(cnn, sample, name)
            decision = registry.apply_registry_policy(
                name, version, accuracy, floor, evidence=costs
            )
    except registry.NotAllowed as refused:
        # A member's run is an experiment like any other: tracked in full and kept, not failed.
        return (
            f"not registered: {refused}. The run and its model are logged; to register this "
            f"commit's model the maintainer runs `dvc pull && dvc repro -f -s evaluate`"
        )
    return f"registered {name} version {version}; {decision.describe()}"


def main() -> None:
    params = config.load_from_cli(__doc__.splitlines()[0])
    runtime.configure()
    cnn = model.load(paths.MODEL_FILE)
    test = data.load_split(paths.TEST_SPLIT)
    corrections = data.load_split(paths.FEEDBACK_SPLIT)
    with pipeline_run.resumed_run() as run_id:
        ev = evaluate(cnn, test)
        scores = ev.metrics | feedback_scores(cnn, corrections)
        write_reports(cnn, test, ev, scores, params.evaluate.gallery_size, paths.EVAL_REPORTS)
        splits = {"mnist-test": test, "feedback": corrections}
        registered = track(cnn, splits, ev, scores, params)
        # Last: an evaluate cut short leaves no record, so DVC runs it again.
        model_md5 = pipeline_run.model_md5(paths.MODEL_FILE)
        files.write_json(paths.EVALUATION_FILE, {"model_md5": model_md5} | scores)
    print(
        f"test accuracy {scores['test_accuracy']:.4f}, macro F1 {scores['test_macro_f1']:.4f}, "
        f"{int((ev.predicted != ev.labels).sum())} of {len(test)} wrong "
        f"-> {paths.EVAL_REPORTS.relative_to(paths.ROOT)}/"
    )
    if "feedback_images" in scores:
        print(
            f"feedback slice: accuracy {scores['feedback_accuracy']:.4f} on "
            f"{scores['feedback_images']} collected corrections (not part of the test score)"
        )
    print(registered)
    print(f"runs compared: {store.runs_page(run_id)}")


if __name__ == "__main__":
    bootstrap.run(main)
