"""Metrics: average precision as scikit-learn's (ties, weights), macro-F1, the majority baseline."""

from __future__ import annotations

import numpy as np

from lmms_probe_tasks.probe.metrics import average_precision, macro_f1, majority_baseline


def test_average_precision_matches_sklearn_including_ties_and_weights():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    scores = np.round(rng.random((200, 5)), 1)  # many ties
    labels = (rng.random((200, 5)) < 0.3).astype(int)
    np.testing.assert_allclose(
        average_precision(scores, labels)[0], average_precision_score(labels, scores, average=None)
    )
    counts = rng.integers(0, 3, 200)
    repeated = np.repeat(np.arange(200), counts)
    np.testing.assert_allclose(
        average_precision(scores, labels, counts[None].astype(float))[0],
        average_precision_score(labels[repeated], scores[repeated], average=None),
    )


def test_macro_f1_matches_its_definition_over_true_and_predicted_classes():
    rng = np.random.default_rng(0)
    for _ in range(50):
        y_true = rng.integers(0, 4, 60)
        y_pred = np.where(rng.random(60) < 0.7, y_true, rng.integers(0, 5, 60))  # class 4: predicted only
        f1 = []
        for c in np.union1d(y_true, y_pred):
            tp = np.sum((y_pred == c) & (y_true == c))
            f1.append(2 * tp / (np.sum(y_pred == c) + np.sum(y_true == c)))
        assert macro_f1(y_true, y_pred) == float(np.mean(f1))
    assert macro_f1(np.array([0, 1]), np.array([0, 1])) == 1.0


def test_majority_baseline_needs_no_fit():
    y = np.array([2, 2, 1, 0, 2, 1, 2, 1])
    is_train = np.array([True, True, True, True, False, False, False, False])
    assert majority_baseline(y, is_train, "multiclass") == 0.5  # class 2 wins on train; half of test
