"""Fits and scores one linear probe per layer: pure functions on arrays, no model, no harness.

The protocol (standardise on probe-train, L2 logistic regression with a fixed seed,
score on probe-test) is the default of the probing literature (SentEval; Tao et al.
2024 use a linear probe). Multi-class targets use a multinomial model; multi-label
targets one binary model per class (one-vs-rest) and are scored by mean average
precision over the classes that occur in probe-test.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

TargetKind = Literal["multiclass", "multilabel"]
TARGET_KINDS: tuple[str, ...] = ("multiclass", "multilabel")


@dataclass(frozen=True)
class ProbeConfig:
    """Settings of the per-layer probe; recorded in every result.

    Attributes:
        kind: ``multiclass`` (one label per doc) or ``multilabel`` (a set of classes per doc).
        C: Inverse L2 strength of scikit-learn's ``LogisticRegression``.
        max_iter: Solver iteration cap.
        seed: ``random_state`` of the probe.
    """

    kind: TargetKind = "multiclass"
    C: float = 1.0
    max_iter: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise ValueError(f"probe kind {self.kind!r} is not supported; valid: {', '.join(TARGET_KINDS)}")
        if not (isinstance(self.C, (int, float)) and self.C > 0):
            raise ValueError(f"probe C={self.C!r} must be a positive number (inverse L2 strength), e.g. C: 1.0")
        if not (isinstance(self.max_iter, int) and self.max_iter >= 1):
            raise ValueError(f"probe max_iter={self.max_iter!r} must be a positive integer, e.g. max_iter: 2000")

    def to_dict(self) -> dict:
        """Return the settings as plain data (for JSON)."""
        return asdict(self)


@dataclass(frozen=True)
class LayerScore:
    """Score of one layer's probe.

    Attributes:
        score: Accuracy (multiclass) or mAP (multilabel) on probe-test; NaN when the
            data cannot support a probe (see ``reason``).
        n_train: Probe-train documents.
        n_test: Probe-test documents.
        extra: Secondary metrics (e.g. ``macro_f1``), plain floats.
        reason: Why ``score`` is NaN, else None.
    """

    score: float
    n_train: int
    n_test: int
    extra: dict = field(default_factory=dict)
    reason: str | None = None


def unusable_reason(y: np.ndarray, is_train: np.ndarray, kind: TargetKind) -> str | None:
    """Say why these labels cannot train and test a probe, or return None if they can.

    Args:
        y: ``[n]`` int class ids (multiclass) or ``[n, k]`` 0/1 indicators (multilabel).
        is_train: ``[n]`` bool, True for probe-train docs.
        kind: Target kind.

    Returns:
        A sentence naming the counts, or None.
    """
    n_train, n_test = int(is_train.sum()), int((~is_train).sum())
    if n_test < 2:
        return f"probe-test has {n_test} doc(s) (need >= 2)"
    if kind == "multiclass":
        classes = np.unique(y[is_train])
        if classes.size < 2:
            return f"probe-train ({n_train} docs) has {classes.size} class(es) (need >= 2)"
        return None
    train_y = y[is_train]
    varied = (train_y.min(axis=0) != train_y.max(axis=0)) if n_train else np.zeros(y.shape[1], bool)
    if not varied.any():
        return f"probe-train ({n_train} docs) has no class that is both present and absent"
    if not y[~is_train].any(axis=0).any():
        return f"probe-test ({n_test} docs) contains no positive of any class"
    return None


def score_layer(x: np.ndarray, y: np.ndarray, is_train: np.ndarray, config: ProbeConfig) -> LayerScore:
    """Fit one probe on the probe-train rows of one layer and score it on the probe-test rows.

    Args:
        x: ``[n, hidden]`` features of one layer (any float dtype; computed in float64
            by scikit-learn after standardisation).
        y: ``[n]`` int class ids (multiclass) or ``[n, k]`` 0/1 indicators (multilabel).
        is_train: ``[n]`` bool, True for probe-train docs.
        config: Probe settings.

    Returns:
        The layer's score; NaN with a reason when :func:`unusable_reason` objects.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    is_train = np.asarray(is_train, dtype=bool)
    n_train, n_test = int(is_train.sum()), int((~is_train).sum())
    reason = unusable_reason(y, is_train, config.kind)
    if reason is not None:
        return LayerScore(math.nan, n_train, n_test, reason=reason)

    x = np.asarray(x, dtype=np.float32)
    logreg = LogisticRegression(C=config.C, max_iter=config.max_iter, random_state=config.seed)
    x_tr, x_te, y_tr, y_te = x[is_train], x[~is_train], y[is_train], y[~is_train]
    with warnings.catch_warnings():
        # Constant classes (one-vs-rest) and slow convergence on tiny sets are expected;
        # neither changes how the score is defined.
        warnings.simplefilter("ignore")
        if config.kind == "multiclass":
            model = make_pipeline(StandardScaler(), logreg).fit(x_tr, y_tr)
            pred = model.predict(x_te)
            return LayerScore(
                float(accuracy_score(y_te, pred)),
                n_train,
                n_test,
                extra={"macro_f1": float(f1_score(y_te, pred, average="macro"))},
            )
        model = make_pipeline(StandardScaler(), OneVsRestClassifier(logreg)).fit(x_tr, y_tr)
        prob = model.predict_proba(x_te)
    present = y_te.any(axis=0)
    ap = average_precision_score(y_te[:, present], prob[:, present], average=None)
    return LayerScore(
        float(np.mean(ap)),
        n_train,
        n_test,
        extra={"n_classes_scored": int(present.sum())},
    )


def multi_hot(label_sets: list[list[int]], n_classes: int) -> np.ndarray:
    """Turn lists of class ids into ``[n, n_classes]`` 0/1 int indicators.

    Raises:
        ValueError: A class id outside ``0..n_classes-1``.
    """
    out = np.zeros((len(label_sets), n_classes), dtype=np.int64)
    for row, labels in enumerate(label_sets):
        for label in labels:
            if not 0 <= int(label) < n_classes:
                raise ValueError(f"class id {label} out of range; valid: 0..{n_classes - 1}")
            out[row, int(label)] = 1
    return out


def summarize(scores: dict[int, LayerScore]) -> dict[str, float]:
    """Summarise a per-layer curve: best layer (first argmax), its score, the last layer's score.

    Args:
        scores: Layer index -> score, for layers 0..L.

    Returns:
        ``{"best_layer", "best", "last"}``; all NaN when every layer is NaN.
    """
    layers = sorted(scores)
    values = np.array([scores[layer].score for layer in layers], dtype=float)
    last = float(values[-1]) if values.size else math.nan
    if values.size == 0 or np.isnan(values).all():
        return {"best_layer": math.nan, "best": math.nan, "last": last}
    best_idx = int(np.nanargmax(values))
    return {"best_layer": float(layers[best_idx]), "best": float(values[best_idx]), "last": last}
