"""Encodes the labels a probe predicts: target kinds, target matrices, log-probabilities and predictions.

Also says when labels cannot support a probe at all (:func:`unusable_reason`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

TargetKind = Literal["multiclass", "multilabel"]
TARGET_KINDS: tuple[str, ...] = ("multiclass", "multilabel")
LossKind = Literal["softmax", "sigmoid"]


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


def multi_hot(label_sets: list[list[int]], n_classes: int) -> np.ndarray:
    """Turn lists of class ids into ``[n, n_classes]`` 0/1 int indicators.

    Args:
        label_sets: ``n`` lists of class ids (each may be empty).
        n_classes: Number of classes ``k``.

    Returns:
        ``[n, n_classes]`` int64 0/1 indicators.

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


@dataclass(frozen=True)
class EncodedTargets:
    """Labels turned into the target matrix of the logistic model.

    Attributes:
        targets: ``[n, K]`` float32 0/1 targets, one column per logit.
        loss: ``softmax`` (multiclass with >= 3 classes) or ``sigmoid`` (binary
            multiclass: one logit for ``classes[1]``; multilabel: one logit per class).
        classes: ``[n_classes]`` the class ids the columns stand for (multiclass: the
            classes seen in the fit rows, sorted; multilabel: ``0..k-1``).
        kind: ``multiclass`` or ``multilabel``.
    """

    targets: np.ndarray
    loss: LossKind
    classes: np.ndarray
    kind: TargetKind

    @property
    def n_classes(self) -> int:
        """Number of classes (2 for a binary task, although it has one logit)."""
        return int(self.classes.size)

    @property
    def binary(self) -> bool:
        """True for a two-class multiclass task fitted with one sigmoid logit."""
        return self.kind == "multiclass" and self.loss == "sigmoid"

    @property
    def bits_per_doc(self) -> float:
        """Bits of one doc's label under the uniform code: ``log2(n_classes)``, or ``k`` for multilabel."""
        return math.log2(self.n_classes) if self.kind == "multiclass" else self.targets.shape[1]


def encode_targets(
    y: np.ndarray,
    kind: TargetKind,
    fit_rows: np.ndarray | None = None,
    classes: np.ndarray | None = None,
) -> EncodedTargets:
    """Encode labels for :func:`lmms_probe_tasks.probe.logreg.fit_logreg` the way scikit-learn does.

    Args:
        y: ``[n]`` int class ids (multiclass) or ``[n, k]`` 0/1 indicators (multilabel).
        kind: ``multiclass`` or ``multilabel``.
        fit_rows: ``[n]`` bool, the rows whose classes define the label space
            (multiclass; default all rows). Rows of other classes get an all-zero target.
        classes: Sorted class ids to use instead of those of ``fit_rows`` (multiclass;
            lets control labels share the task's columns).

    Returns:
        The encoded targets.

    Raises:
        ValueError: Unknown ``kind`` or labels of the wrong shape.
    """
    if kind not in TARGET_KINDS:
        raise ValueError(f"target kind {kind!r} is not supported; valid: {', '.join(TARGET_KINDS)}")
    y = np.asarray(y)
    if kind == "multilabel":
        if y.ndim != 2:
            raise ValueError(f"multilabel y must be [n, k] 0/1 indicators; got shape {y.shape}. Fix: probe.multi_hot")
        return EncodedTargets((y != 0).astype(np.float32), "sigmoid", np.arange(y.shape[1]), kind)
    if y.ndim != 1:
        raise ValueError(f"multiclass y must be [n] class ids; got shape {y.shape}. Use kind='multilabel' for [n, k]")
    if classes is None:
        rows = np.ones(y.shape[0], bool) if fit_rows is None else np.asarray(fit_rows, bool)
        classes = np.unique(y[rows])
    classes = np.asarray(classes)
    if classes.size == 2:
        return EncodedTargets((y == classes[1]).astype(np.float32)[:, None], "sigmoid", classes, kind)
    onehot = (y[:, None] == classes[None, :]).astype(np.float32)
    return EncodedTargets(onehot, "softmax", classes, kind)


def class_index(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Column of each label in ``classes``.

    Args:
        labels: ``[...]`` class ids.
        classes: ``[n_classes]`` sorted class ids.

    Returns:
        ``[...]`` int64 positions in ``classes``; -1 for a label not in it.
    """
    pos = np.searchsorted(classes, labels).clip(0, classes.size - 1)
    return np.where(classes[pos] == labels, pos, -1)


def log_proba(logits: torch.Tensor, loss: LossKind, binary: bool) -> torch.Tensor:
    """Per-class log-probabilities from logits.

    Args:
        logits: ``[..., K]`` float32 logits.
        loss: ``softmax`` or ``sigmoid``.
        binary: True when one sigmoid logit encodes a two-class task.

    Returns:
        ``[..., n_classes]`` log-probabilities (for independent sigmoids, of each class
        being present).
    """
    if loss == "softmax":
        return torch.log_softmax(logits, dim=-1)
    if binary:
        return torch.cat([F.logsigmoid(-logits), F.logsigmoid(logits)], dim=-1)
    return F.logsigmoid(logits)


def row_nll(z: torch.Tensor, t: torch.Tensor, loss: LossKind) -> torch.Tensor:
    """Negative log-likelihood in nats of each row's 0/1 targets.

    Args:
        z: ``[..., K]`` float32 logits.
        t: ``[..., K]`` 0/1 targets (broadcast against ``z``).
        loss: ``softmax`` (one exclusive class) or ``sigmoid`` (independent logits, summed).

    Returns:
        ``[...]`` float32 per-row loss.
    """
    if loss == "softmax":
        return torch.logsumexp(z, -1) - (z * t).sum(-1)
    return (F.softplus(z) - z * t).sum(-1)


def predict(logits: torch.Tensor, enc: EncodedTargets) -> np.ndarray:
    """Turn logits into the predictions the metrics score.

    Args:
        logits: ``[..., K]`` float32 logits.
        enc: The encoding the logits were fitted under.

    Returns:
        ``[...]`` predicted class ids (multiclass) or ``[..., k]`` float32 presence
        probabilities (multilabel).
    """
    logp = log_proba(logits, enc.loss, enc.binary)
    if enc.kind == "multiclass":
        return enc.classes[logp.argmax(-1).cpu().numpy()]
    return logp.exp().cpu().numpy().astype(np.float32)


__all__ = [
    "TARGET_KINDS",
    "EncodedTargets",
    "LossKind",
    "TargetKind",
    "class_index",
    "encode_targets",
    "log_proba",
    "multi_hot",
    "predict",
    "row_nll",
    "unusable_reason",
]
