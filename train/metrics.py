"""The metrics emotion-recognition papers print, all from a confusion matrix (rows: true class,
columns: predicted class), so that a fold's stored confusion matrices are enough to rescore it:

- WAR, weighted average recall (= accuracy): correct / utterances;
- UAR, unweighted average recall (= balanced accuracy): the mean recall of the classes the
  utterances hold (a class with no utterance has no recall, and is left out);
- macro-F1: the mean F1 of those same classes (a class never predicted has precision 0);
- weighted-F1: each class's F1 weighted by its utterances (scikit-learn's `average="weighted"`).

Each agrees with scikit-learn's `accuracy_score`, `balanced_accuracy_score` and `f1_score(...,
labels=<classes in y_true>, zero_division=0)` (tested). Bootstrap confidence intervals resample the
utterances behind a confusion matrix: a resample of n utterances with replacement is a multinomial
draw of n over the matrix's cells.
"""

from __future__ import annotations

import numpy as np

METRICS = ("war", "uar", "f1_macro", "f1_weighted")
LABELS = {"war": "WAR", "uar": "UAR", "f1_macro": "macro-F1", "f1_weighted": "weighted-F1"}


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> list[list[int]]:
    """(C, C) counts as nested lists: [true][predicted]."""
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm.tolist()


def scores(cm) -> dict[str, np.ndarray]:
    """WAR, UAR, macro-F1 and weighted-F1 in [0, 1] of confusion matrices `cm` (..., C, C); each an
    array of the leading shape (a float for one matrix); NaN where a matrix counts no utterance."""
    cm = np.asarray(cm, np.float64)
    support, predicted, hits = cm.sum(-1), cm.sum(-2), np.diagonal(cm, axis1=-2, axis2=-1)
    total, present = support.sum(-1), support > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(present, hits / support, 0.0)
        precision = np.where(predicted > 0, hits / predicted, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        n_present = present.sum(-1)
        out = {
            "war": hits.sum(-1) / total,
            "uar": np.where(n_present > 0, (recall * present).sum(-1) / n_present, np.nan),
            "f1_macro": np.where(n_present > 0, (f1 * present).sum(-1) / n_present, np.nan),
            "f1_weighted": (f1 * support).sum(-1) / total,
        }
    return {k: v[()] if v.ndim == 0 else v for k, v in out.items()}


def class_recall(cm) -> list[float]:
    """Recall of each class of one confusion matrix (C, C); NaN for a class with no utterance."""
    cm = np.asarray(cm, np.float64)
    support = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan).tolist()


def war_uar(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float]:
    """(WAR, UAR) in [0, 1] of class indices; NaN for no utterance."""
    if len(y_true) == 0:
        return float("nan"), float("nan")
    n = int(max(np.max(y_true), np.max(y_pred))) + 1
    s = scores(confusion(y_true, y_pred, n))
    return float(s["war"]), float(s["uar"])


def resample(cm, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` bootstrap resamples (n, C, C) of the utterances behind one confusion matrix (C, C)."""
    cm = np.asarray(cm, np.int64)
    total = int(cm.sum())
    if total == 0:
        return np.zeros((n, *cm.shape), np.int64)
    return rng.multinomial(total, cm.ravel() / total, size=n).reshape(n, *cm.shape)


def bootstrap_weights(n_items: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, n_items) counts: how often each of `n_items` utterances is drawn in each of `n` bootstrap
    resamples (with replacement, each resample as large as the set)."""
    return rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=n)


def weighted_confusion(weights: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(B, C, C) confusion matrices of the utterances (U,) counted `weights` (B, U) times each."""
    cells = np.zeros((len(y_true), n_classes * n_classes))
    cells[np.arange(len(y_true)), np.asarray(y_true) * n_classes + np.asarray(y_pred)] = 1.0
    return (weights @ cells).reshape(len(weights), n_classes, n_classes)
