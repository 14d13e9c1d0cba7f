"""Matplotlib figures for the stages' reports. Figures are returned, never saved or logged here.

Uses the object-oriented `Figure` API (no pyplot): no global state, no GUI backend needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure, SubFigure

if TYPE_CHECKING:  # the figure draws arrays only; keras stays out of the stages that skip it
    from inference.feature_maps import CnnViews

VIEW_COLUMNS = 16  # filters and maps per row in `cnn_views`
MAPS_SHOWN = 32  # of a deeper conv layer: its most active maps, so the figure stays readable


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
    image = ax.imshow(off_diagonal, cmap="Reds", vmin=0)
    fig.colorbar(image, ax=ax, label="misclassified count")
    for (true, pred), count in np.ndenumerate(matrix):
        ax.text(
            pred,
            true,
            str(count),
            ha="center",
            va="center",
            fontsize=7.5,
            color=count_color(count, true == pred, image.norm(off_diagonal[true, pred])),
        )
    ax.set_xticks(range(len(matrix)))
    ax.set_yticks(range(len(matrix)))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_title("Confusion matrix (test set; diagonal in gray)")
    return fig


def count_color(count: int, diagonal: bool, shade: float) -> str:
    """Gray on the diagonal and for zeros; white on the darker half of the red scale, where
    black would vanish; black elsewhere."""
    if diagonal or count == 0:
        return "gray"
    return "white" if shade > 0.5 else "black"


def cnn_views(views: CnnViews, original: np.ndarray | None = None) -> Figure:
    """The image, what the model saw and its answer; then the first conv layer's filters, each
    above the map it makes of this image; then the most active maps of each deeper conv layer."""
    deeper = views.convs[1:]
    heights = [2.2, 1.6 * math.ceil(len(views.filters) / VIEW_COLUMNS)]
    heights += [
        0.8 * math.ceil(min(conv.maps.shape[-1], MAPS_SHOWN) / VIEW_COLUMNS) for conv in deeper
    ]
    fig = Figure(
        figsize=(VIEW_COLUMNS * 0.75, sum(heights) + 0.6 * len(heights)), layout="constrained"
    )
    parts = fig.subfigures(len(heights), 1, height_ratios=heights)
    answer_panel(parts[0], views, original)
    filters_and_maps(parts[1], views)
    for part, conv in zip(parts[2:], deeper, strict=True):
        strongest_maps(part, conv.title, conv.maps)
    return fig


def answer_panel(part: SubFigure, views: CnnViews, original: np.ndarray | None) -> None:
    images = ([("the image", original)] if original is not None else []) + [
        ("what the model saw (28x28)", views.seen)
    ]
    axes = part.subplots(1, len(images) + 1, width_ratios=[1] * len(images) + [1.8])
    for ax, (title, image) in zip(axes, images, strict=False):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    bars = axes[-1]
    best = int(views.probabilities.argmax())
    colors = ["tab:blue" if digit == best else "lightgray" for digit in range(10)]
    bars.bar(range(10), views.probabilities, color=colors)
    bars.set_xticks(range(10))
    bars.set_ylim(0, 1)
    bars.set_ylabel("probability")
    bars.set_title(f"answer: {best} ({views.probabilities[best]:.1%})", fontsize=9)


def filters_and_maps(part: SubFigure, views: CnnViews) -> None:
    """Each learned filter above the map it makes. A filter is drawn on its own scale (blue:
    weights below zero, red: above), so its pattern shows however small its weights."""
    conv = views.convs[0]
    count = len(views.filters)
    rows = math.ceil(count / VIEW_COLUMNS)
    axes = part.subplots(2 * rows, VIEW_COLUMNS, squeeze=False)
    top = float(conv.maps.max()) or 1.0  # one scale for the layer: strong and weak maps show
    for ax in axes.flat:
        ax.set_axis_off()
    for i in range(count):
        row, column = 2 * (i // VIEW_COLUMNS), i % VIEW_COLUMNS
        reach = float(np.abs(views.filters[i]).max()) or 1.0
        axes[row, column].imshow(views.filters[i], cmap="RdBu_r", vmin=-reach, vmax=reach)
        axes[row + 1, column].imshow(conv.maps[..., i], cmap="magma", vmin=0, vmax=top)
    part.suptitle(f"{conv.title}: each learned filter above the map it makes", fontsize=10)


def strongest_maps(part: SubFigure, title: str, maps: np.ndarray) -> None:
    channels = maps.shape[-1]
    shown = np.argsort(-maps.mean(axis=(0, 1)), kind="stable")[:MAPS_SHOWN]
    axes = part.subplots(math.ceil(len(shown) / VIEW_COLUMNS), VIEW_COLUMNS, squeeze=False)
    top = float(maps.max()) or 1.0
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, channel in zip(axes.flat, shown, strict=False):
        ax.imshow(maps[..., channel], cmap="magma", vmin=0, vmax=top)
        ax.set_title(str(channel), fontsize=6)
    which = f"the {len(shown)} most active of {channels} maps" if channels > len(shown) else "maps"
    height, width = maps.shape[:2]
    part.suptitle(f"{title}: {which} ({height}x{width})", fontsize=10)
