"""evaluate: metrics computed from predictions, and the reports written from them."""

from __future__ import annotations

import numpy as np
import pytest

import evaluate
from ml import plots


@pytest.fixture
def ev() -> evaluate.Evaluation:
    """Four images: 0 and 1 right, a 2 taken for a 1 (51% vs 41%), a 3 right."""
    probs = np.full((4, 10), 0.01)
    for row, (guess, p) in enumerate([(0, 0.91), (1, 0.91), (1, 0.51), (3, 0.91)]):
        probs[row, guess] = p
    probs[2, 2] = 0.41
    return evaluate.Evaluation(labels=np.array([0, 1, 2, 3]), probs=probs)


def test_metrics_are_computed_from_the_predictions(ev):
    scores = ev.metrics
    assert set(scores) == {"test_accuracy", "test_loss", "test_macro_f1"}
    assert scores["test_accuracy"] == 0.75
    expected_loss = -np.mean(np.log([0.91, 0.91, 0.41, 0.91]))
    assert scores["test_loss"] == pytest.approx(expected_loss, abs=1e-5)
    digits = ev.per_digit().set_index("digit")
    assert digits.loc[2, "recall"] == 0.0 and digits.loc[1, "precision"] == 0.5
    assert digits.loc[0, "f1"] == 1.0 and digits.loc[1, "support"] == 1


def test_confusion_counts_true_rows_against_predicted_columns(ev):
    matrix = ev.confusion()
    assert matrix[2, 1] == 1 and matrix.trace() == 3 and matrix.sum() == 4


def test_every_count_in_the_confusion_figure_stands_out_from_its_cell():
    matrix = np.diag([50, 60, 70])
    matrix[2, 0], matrix[0, 1] = 9, 1  # the darkest cell and a light one
    texts = {
        text.get_position(): text.get_color()
        for text in plots.confusion_matrix(matrix).axes[0].texts
    }
    assert texts[(0, 2)] == "white"  # (x=predicted, y=true) on the darkest red
    assert texts[(1, 0)] == "black" and texts[(0, 0)] == "gray" and texts[(2, 0)] == "gray"
