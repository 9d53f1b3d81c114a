"""Targets of a probe: kinds, label encoding, and when labels cannot support a probe (pure arrays).

The probes themselves (the vectorised all-layer fit and the protocol around it) live in
:mod:`lmms_probe_tasks.fit` and :mod:`lmms_probe_tasks.protocol`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

TargetKind = Literal["multiclass", "multilabel"]
TARGET_KINDS: tuple[str, ...] = ("multiclass", "multilabel")


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
