"""Test-split evaluation: loss, accuracy, confusion matrix and per-class report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Evaluation:
    """What evaluating on an unshuffled split gives."""

    loss: float
    accuracy: float
    confusion: np.ndarray
    report: dict[str, Any]
    report_text: str
    predicted: np.ndarray
    probabilities: np.ndarray


def evaluate_predictions(
    probabilities: np.ndarray, labels: np.ndarray, class_names: list[str]
) -> Evaluation:
    """Categorical cross-entropy (as Keras computes it), accuracy, confusion matrix, report."""
    from sklearn.metrics import classification_report, confusion_matrix

    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    # Keras clips probabilities to [eps, 1 - eps] with eps = 1e-7.
    clipped = np.clip(probabilities, 1e-7, 1 - 1e-7)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    loss = float(-np.mean(np.log(clipped[np.arange(len(labels)), labels])))
    predicted = probabilities.argmax(axis=1)
    accuracy = float(np.mean(predicted == labels))
    indices = list(range(len(class_names)))
    confusion = confusion_matrix(labels, predicted, labels=indices)
    report = classification_report(
        labels,
        predicted,
        labels=indices,
        target_names=class_names,
        output_dict=True,
        zero_division=0,
    )
    report_text = classification_report(
        labels, predicted, labels=indices, target_names=class_names, zero_division=0, digits=4
    )
    return Evaluation(loss, accuracy, confusion, report, report_text, predicted, probabilities)
