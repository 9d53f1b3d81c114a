"""Scores model-free baselines of a task: how much the document text alone gives away."""

from __future__ import annotations

import math

import numpy as np

from lmms_probe_tasks.probe.targets import unusable_reason


def text_only_score(texts: list[str], y: np.ndarray, is_train: np.ndarray, kind: str) -> float:
    """Score of a bag-of-words probe on the document text alone (no model, no image).

    The hypothesis-only baseline of the entailment literature (Gururangan et al. 2018): how
    much of a task the text gives away. NaN when the texts are empty or constant.

    Args:
        texts: ``n`` document texts (None or empty allowed).
        y: ``[n]`` class ids (multiclass) or ``[n, k]`` indicators (multilabel: always NaN).
        is_train: ``[n]`` bool, True for probe-train docs.
        kind: ``multiclass`` or ``multilabel``.

    Returns:
        Probe-test accuracy of TF-IDF (1-2 grams) logistic regression, or NaN.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score

    texts = [t or "" for t in texts]
    if len(set(texts)) < 2 or unusable_reason(y, is_train, kind) or kind == "multilabel":  # type: ignore[arg-type]
        return math.nan
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=1)
    train_x = vectorizer.fit_transform([t for t, keep in zip(texts, is_train) if keep])
    test_x = vectorizer.transform([t for t, keep in zip(texts, is_train) if not keep])
    model = LogisticRegression(max_iter=2000).fit(train_x, y[is_train])
    return float(accuracy_score(y[~is_train], model.predict(test_x)))


__all__ = ["text_only_score"]
