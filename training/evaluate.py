"""Classification metrics of a model on held-out reviews."""

from __future__ import annotations

import numpy as np
from sklearn import metrics

from serving.contract import DECISION_THRESHOLD, LABELS


def classification_report(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """Accuracy, precision, recall, F1 (positive class), ROC AUC and the confusion matrix.

    Args:
        labels: true 0/1 targets.
        probabilities: predicted probability of the positive class.

    Returns:
        A JSON-ready dict; ``confusion_matrix`` rows are true classes and columns predicted
        classes, both in ``LABELS`` order.
    """
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predicted = (probabilities >= DECISION_THRESHOLD).astype(int)
    both_classes = len(np.unique(labels)) == 2
    return {
        "num_samples": len(labels),
        "accuracy": float(metrics.accuracy_score(labels, predicted)),
        "precision": float(metrics.precision_score(labels, predicted, zero_division=0)),
        "recall": float(metrics.recall_score(labels, predicted, zero_division=0)),
        "f1": float(metrics.f1_score(labels, predicted, zero_division=0)),
        # ROC AUC is undefined when only one class is present.
        "roc_auc": float(metrics.roc_auc_score(labels, probabilities)) if both_classes else None,
        "confusion_matrix": {
            "labels": list(LABELS),
            "matrix": metrics.confusion_matrix(labels, predicted, labels=[0, 1]).tolist(),
        },
    }


def summary_line(report: dict) -> str:
    """One line for a terminal: the headline numbers of ``classification_report``."""
    (true_negative, false_positive), (false_negative, true_positive) = report["confusion_matrix"][
        "matrix"
    ]
    roc_auc = "n/a" if report["roc_auc"] is None else f"{report['roc_auc']:.4f}"
    return (
        f"accuracy {report['accuracy']:.4f}, precision {report['precision']:.4f}, "
        f"recall {report['recall']:.4f}, F1 {report['f1']:.4f}, ROC AUC {roc_auc}, "
        f"confusion [[TN {true_negative}, FP {false_positive}], "
        f"[FN {false_negative}, TP {true_positive}]] on {report['num_samples']} reviews"
    )
