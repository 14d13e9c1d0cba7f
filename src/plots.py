"""Matplotlib figures for the stages' reports. Figures are returned, never saved or logged here.

Uses the object-oriented `Figure` API (no pyplot): no global state, no GUI backend needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def digit_grid(
    images: np.ndarray,
    titles: Sequence[str],
    colors: Sequence[str] | None = None,
    columns: int = 10,
) -> Figure:
    """Digits in a grid, each titled (e.g. its label, or 'true→pred 97%')."""
    rows = max(1, math.ceil(len(images) / columns))
    fig = Figure(figsize=(columns * 1.1, rows * 1.3))
    for i, (image, title) in enumerate(zip(images, titles, strict=True)):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(image.squeeze(), cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(title, fontsize=8, color=colors[i] if colors else "black")
        ax.set_axis_off()
    return fig


def training_curves(history: pd.DataFrame) -> Figure:
    """Loss and accuracy per epoch, train vs validation: over- or under-fitting at a glance."""
    fig = Figure(figsize=(10, 3.6))
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=True):
        ax.plot(history["epoch"], history[metric], marker="o", label="train")
        ax.plot(history["epoch"], history[f"val_{metric}"], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def confusion_matrix(matrix: np.ndarray) -> Figure:
    """Counts with the diagonal dimmed, so the confusions (the off-diagonal cells) stand out."""
    fig = Figure(figsize=(6.4, 5.6))
    ax = fig.add_subplot()
    off_diagonal = np.where(np.eye(len(matrix), dtype=bool), 0, matrix)
    image = ax.imshow(off_diagonal, cmap="Reds")
    fig.colorbar(image, ax=ax, label="misclassified count")
    for (true, pred), count in np.ndenumerate(matrix):
        ax.text(
            pred,
            true,
            str(count),
            ha="center",
            va="center",
            fontsize=7,
            color="gray" if true == pred else "black",
        )
    ax.set_xticks(range(len(matrix)))
    ax.set_yticks(range(len(matrix)))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_title("Confusion matrix (test set; diagonal in gray)")
    return fig
