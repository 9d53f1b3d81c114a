"""Scores probe predictions: accuracy, macro-F1, (bootstrap-weighted) average precision, the majority baseline."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import f1_score

from lmms_probe_tasks.probe.targets import TargetKind


def average_precision(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Average precision per class, optionally with per-resample doc weights (bootstrap counts).

    Equals scikit-learn's ``average_precision_score(average=None)`` with unit weights,
    ties included: precision is taken at the end of each group of tied scores.

    Args:
        scores: ``[n, k]`` float scores.
        labels: ``[n, k]`` 0/1 indicators.
        weights: ``[b, n]`` non-negative doc weights (default one row of ones).

    Returns:
        ``[b, k]`` float64 AP; NaN where a class has no positive weight.
    """
    n, k = scores.shape
    w = np.ones((1, n)) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(-scores, axis=0, kind="stable")
    s_sorted = np.take_along_axis(scores, order, 0)
    y_sorted = np.take_along_axis(np.asarray(labels, dtype=np.float64), order, 0)
    is_end = np.ones((n, k), bool)
    is_end[:-1] = s_sorted[1:] != s_sorted[:-1]
    end = np.where(is_end, np.arange(n)[:, None], n)
    end = np.minimum.accumulate(end[::-1], axis=0)[::-1]  # last index of each tie group
    w_sorted = w[:, order]  # [b, n, k]
    pos = w_sorted * y_sorted
    tp = np.take_along_axis(np.cumsum(pos, axis=1), np.broadcast_to(end, w_sorted.shape), 1)
    tot = np.take_along_axis(np.cumsum(w_sorted, axis=1), np.broadcast_to(end, w_sorted.shape), 1)
    precision = np.divide(tp, tot, out=np.zeros_like(tp), where=tot > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * precision).sum(1) / pos.sum(1)


def mean_average_precision(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Mean average precision over the classes with >= 1 positive in ``labels`` (and, per resample, positive weight).

    Args:
        scores: ``[n, k]`` float scores.
        labels: ``[n, k]`` 0/1 indicators.
        weights: ``[b, n]`` doc weights (default one row of ones).

    Returns:
        ``[b]`` float64 mAP (NaN if no class has a positive).
    """
    present = np.asarray(labels).any(axis=0)
    if not present.any():
        return np.full(1 if weights is None else len(weights), np.nan)
    ap = average_precision(scores[:, present], labels[:, present], weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without any positive: NaN
        return np.nanmean(ap, axis=1)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-F1 over the classes in ``y_true`` or ``y_pred`` (scikit-learn's ``f1_score``).

    Args:
        y_true: ``[n]`` true class ids.
        y_pred: ``[n]`` predicted class ids.

    Returns:
        The unweighted mean F1 of those classes (a class never true nor predicted cannot occur).
    """
    labels = np.union1d(y_true, y_pred)
    return float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


def majority_baseline(y: np.ndarray, is_train: np.ndarray, kind: TargetKind) -> float:
    """Score of a constant predictor on probe-test: no fit.

    Multiclass: accuracy of the most frequent probe-train class (ties: smallest id).
    Multilabel: mAP of a constant score, i.e. the mean test prevalence of the scored classes.

    Args:
        y: ``[n]`` class ids or ``[n, k]`` 0/1 indicators.
        is_train: ``[n]`` bool, True for probe-train docs.
        kind: ``multiclass`` or ``multilabel``.

    Returns:
        The probe-test accuracy (multiclass) or mAP (multilabel).
    """
    test = ~np.asarray(is_train, bool)
    if kind == "multiclass":
        classes, counts = np.unique(y[is_train], return_counts=True)
        return float(np.mean(y[test] == classes[np.argmax(counts)]))
    return float(mean_average_precision(np.zeros(y[test].shape), y[test])[0])


def layer_scores(predictions: np.ndarray, y_test: np.ndarray, kind: TargetKind) -> np.ndarray:
    """The headline metric of every layer: accuracy (multiclass) or mAP (multilabel).

    Args:
        predictions: ``[l, n_test]`` class ids or ``[l, n_test, k]`` scores.
        y_test: ``[n_test]`` class ids or ``[n_test, k]`` 0/1 indicators.
        kind: ``multiclass`` or ``multilabel``.

    Returns:
        ``[l]`` float64 scores.
    """
    if kind == "multiclass":
        return (predictions == y_test[None]).mean(1)
    return np.array([mean_average_precision(p, y_test)[0] for p in predictions])


__all__ = ["average_precision", "layer_scores", "macro_f1", "majority_baseline", "mean_average_precision"]
