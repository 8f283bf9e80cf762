"""WAR (weighted average recall = accuracy) and UAR (unweighted average recall = balanced accuracy)."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix


def war_uar(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float]:
    """(WAR, UAR) in [0, 1]; NaN for no utterance. UAR averages the recall of the classes present in
    `y_true` (the run's report warns when a fold's test part lacks a class)."""
    if len(y_true) == 0:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", "A single label was found")
        return float(accuracy_score(y_true, y_pred)), float(balanced_accuracy_score(y_true, y_pred))


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> list[list[int]]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "A single label was found")
        return confusion_matrix(y_true, y_pred, labels=list(range(n_classes))).tolist()
