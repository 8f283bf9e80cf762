"""The metrics of every table: parity with scikit-learn, bootstrap intervals, the breakdowns."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from cmarr.train.breakdown import breakdown
from cmarr.train.metrics import bootstrap_weights, class_recall, confusion, scores, war_uar, weighted_confusion
from cmarr.train.report import CONDITIONS, fold_metrics, summarize
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score


@pytest.mark.parametrize("seed", range(30))
def test_scores_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n_classes, n = int(rng.integers(2, 8)), int(rng.integers(1, 60))
    y_true, y_pred = rng.integers(0, n_classes, n), rng.integers(0, n_classes, n)
    got, labels = scores(confusion(y_true, y_pred, n_classes)), np.unique(y_true)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = {
            "war": accuracy_score(y_true, y_pred),
            "uar": balanced_accuracy_score(y_true, y_pred),
            "f1_macro": f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
            "f1_weighted": f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0),
        }
    assert {k: float(got[k]) for k in want} == pytest.approx(want, abs=1e-12)
    assert war_uar(y_true, y_pred) == pytest.approx((want["war"], want["uar"]), abs=1e-12)


def test_scores_of_nothing_are_nan_and_class_recall_skips_absent_classes():
    assert all(np.isnan(v) for v in scores(np.zeros((3, 3))).values())
    recall = class_recall([[2, 0, 0], [0, 0, 0], [1, 0, 3]])
    assert recall[0] == 1.0 and np.isnan(recall[1]) and recall[2] == 0.75


def test_weighted_confusion_counts_each_utterance_its_weight():
    y_true, y_pred = np.array([0, 1, 1]), np.array([0, 0, 1])
    cm = weighted_confusion(np.array([[1, 1, 1], [3, 0, 0]]), y_true, y_pred, 2)
    assert cm[0].tolist() == confusion(y_true, y_pred, 2) and cm[1].tolist() == [[3, 0], [0, 0]]
    w = bootstrap_weights(7, 50, np.random.default_rng(0))
    assert w.shape == (50, 7) and (w.sum(1) == 7).all()


def _fold(rng, n: int, accuracy: float, n_classes: int = 4):
    """A fold's result.json test part: every condition scores the same n utterances."""
    ids = np.arange(n)
    labels = rng.integers(0, n_classes, n)
    right = rng.random(n) < accuracy
    pred = np.where(right, labels, (labels + 1) % n_classes)
    test = {c: {"ids": ids.tolist(), "pred": pred.tolist()} for c in CONDITIONS}
    return [{"test": test}], labels


def test_bootstrap_interval_holds_the_mean_narrows_with_utterances_and_is_seeded():
    rng = np.random.default_rng(0)
    widths = []
    for n in (40, 4000):
        results, labels = _fold(rng, n, 0.6)
        metrics = fold_metrics(results, labels, 4, key=(0, 1))
        table = summarize([{"seed": 0, "fold": 1, "metrics": metrics}])
        lo, hi = table["Avg."]["uar_ci"]
        assert lo <= table["Avg."]["uar_mean"] <= hi
        widths.append(hi - lo)
        again = summarize([{"seed": 0, "fold": 1, "metrics": fold_metrics(results, labels, 4, key=(0, 1))}])
        assert again["Avg."]["uar_ci"] == [lo, hi]
    # the interval of a proportion shrinks as 1/sqrt(n): 100x the utterances, about a tenth the width
    assert 0.05 < widths[1] / widths[0] < 0.2


def test_perfect_predictions_have_a_point_interval_and_f1_of_100():
    results, labels = _fold(np.random.default_rng(1), 200, 1.0)
    table = summarize([{"seed": 0, "fold": 1, "metrics": fold_metrics(results, labels, 4)}])
    assert table["{s,v,t}"]["uar_ci"] == [100.0, 100.0]
    assert table["Avg."]["f1_macro_mean"] == table["Avg."]["f1_weighted_mean"] == 100.0


def test_breakdown_pools_speakers_and_lists_each_fold_run():
    rng = np.random.default_rng(2)
    results, labels = _fold(rng, 60, 0.5)
    speakers = np.array(["Ses01F", "Ses01M"] * 30)
    metrics = fold_metrics(results, labels, 4, speakers)
    per_fold = [{"seed": 0, "fold": 1, "session": "Ses01", "metrics": metrics}]
    text = breakdown(per_fold, ["ang", "hap", "neu", "sad"])
    assert "| Ses01F | 30 |" in text and "| Ses01M | 30 |" in text
    assert "| 0 | 1 | Ses01 | 60 |" in text
    by_speaker = metrics["{s,v,t}"]["speakers"]
    assert np.sum([np.array(cm) for cm in by_speaker.values()], 0).tolist() == metrics["{s,v,t}"]["confusion"]
