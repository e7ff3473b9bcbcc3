"""Figures logged with every run: confusion matrices and learning curves."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: runs on machines with no display
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(
    matrix: np.ndarray,
    class_names: Sequence[str],
    path: Path,
    normalize: bool = False,
    title: str = "Confusion matrix",
) -> Path:
    """Save the confusion matrix the way the seed plots it: classes on both axes, numbers in cells.

    With `normalize`, each row is divided by its true-class count.
    """
    plt = _pyplot()
    values = matrix.astype(float)
    if normalize:
        row_sums = values.sum(axis=1, keepdims=True)
        values = np.divide(values, row_sums, out=np.zeros_like(values), where=row_sums > 0)
    size = max(5.0, 0.55 * len(class_names) + 2.5)
    figure, axes = plt.subplots(figsize=(size, size))
    image = axes.imshow(values, interpolation="nearest", cmap=plt.cm.Blues)
    axes.set_title(title)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    ticks = np.arange(len(class_names))
    axes.set_xticks(ticks, labels=list(class_names), rotation=45, ha="right")
    axes.set_yticks(ticks, labels=list(class_names))
    threshold = values.max() / 2.0 if values.size else 0.0
    for row, column in itertools.product(range(values.shape[0]), range(values.shape[1])):
        text = f"{values[row, column]:.2f}" if normalize else f"{int(matrix[row, column])}"
        axes.text(
            column,
            row,
            text,
            horizontalalignment="center",
            verticalalignment="center",
            color="white" if values[row, column] > threshold else "black",
            fontsize=8 if len(class_names) > 12 else 10,
        )
    axes.set_ylabel("True label")
    axes.set_xlabel("Predicted label")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_learning_curves(history: Mapping[str, Sequence[float]], path: Path) -> Path:
    """Save loss and accuracy per epoch, training and validation side by side."""
    plt = _pyplot()
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for axes, metric in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        for key, label in ((metric, "train"), (f"val_{metric}", "valid")):
            values = history.get(key)
            if values:
                epochs = np.arange(len(values))
                axes.plot(epochs, values, marker="o", markersize=3, label=label)
        axes.set_title(metric)
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
