"""Checks the inputs of the protocol and holds its docs with the probe-train rows first."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmms_probe_tasks.probe.controls import as_keys
from lmms_probe_tasks.probe.targets import TARGET_KINDS, TargetKind, unusable_reason


def check_inputs(
    x: np.ndarray,
    y: np.ndarray,
    is_train: np.ndarray,
    kind: str,
    groups: np.ndarray | Sequence[Any] | None,
    types: np.ndarray | Sequence[Any] | None,
    layer_ids: Sequence[int] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, tuple[int, ...]]:
    """Validate the inputs of the protocol; return ``(y, is_train, groups, types, layer ids)`` as arrays.

    Raises:
        ValueError: A wrong kind, shape or dtype, naming the expected one.
    """
    if kind not in TARGET_KINDS:
        raise ValueError(f"kind {kind!r} is not supported; valid: {', '.join(TARGET_KINDS)}")
    if getattr(x, "ndim", 0) != 3:
        raise ValueError(
            f"x must be [n_layers, n_docs, hidden]; got shape {getattr(x, 'shape', None)}. "
            "Fix: np.stack(per_layer_features, axis=0)"
        )
    n_layers, n, _ = x.shape
    y = np.asarray(y)
    expected = "[n] int class ids" if kind == "multiclass" else "[n, k] 0/1 indicators"
    if y.shape[:1] != (n,) or y.ndim != (1 if kind == "multiclass" else 2):
        raise ValueError(f"{kind} y must be {expected} with n={n}; got shape {y.shape}")
    is_train = np.asarray(is_train)
    if is_train.dtype != bool or is_train.shape != (n,):
        raise ValueError(f"is_train must be a [n]={n} bool mask; got dtype {is_train.dtype}, shape {is_train.shape}")
    g = None if groups is None else as_keys(groups, n, "groups")
    t = None if types is None else as_keys(types, n, "types")
    ids = tuple(range(n_layers)) if layer_ids is None else tuple(int(i) for i in layer_ids)
    if len(ids) != n_layers or len(set(ids)) != n_layers:
        raise ValueError(f"layer_ids must be {n_layers} distinct ints (one per x layer); got {list(ids)[:8]}...")
    return y, is_train, g, t, ids


@dataclass(frozen=True)
class Docs:
    """The docs with probe-train rows first (their relative order kept, so splits and draws are unchanged).

    Every fit then reads the view ``xs[:, :n_train]`` and no work goes into zero-weight test rows.

    Attributes:
        y: ``[n]`` class ids or ``[n, k]`` indicators.
        is_train: ``[n]`` bool (True for the first ``n_train``).
        groups: ``[n]`` group keys or None.
        types: ``[n]`` type keys or None.
        row_order: ``[n]`` rows of ``x`` in this order; None when ``x`` is already in it.
    """

    y: np.ndarray
    is_train: np.ndarray
    groups: np.ndarray | None
    types: np.ndarray | None
    row_order: np.ndarray | None

    @classmethod
    def train_first(
        cls, y: np.ndarray, is_train: np.ndarray, groups: np.ndarray | None, types: np.ndarray | None
    ) -> Docs:
        """Reorder the per-doc arrays so that probe-train docs come first."""
        order = np.concatenate([np.flatnonzero(is_train), np.flatnonzero(~is_train)])
        row_order = None if np.array_equal(order, np.arange(order.size)) else order
        return cls(
            y[order],
            is_train[order],
            None if groups is None else groups[order],
            None if types is None else types[order],
            row_order,
        )

    @property
    def n_train(self) -> int:
        """Probe-train docs."""
        return int(self.is_train.sum())

    @property
    def n_test(self) -> int:
        """Probe-test docs."""
        return int((~self.is_train).sum())

    def unusable_reason(self, kind: TargetKind) -> str | None:
        """Why these docs cannot support the protocol (including a group-disjoint dev split), or None."""
        reason = unusable_reason(self.y, self.is_train, kind)
        if reason is None:
            train_idx = np.flatnonzero(self.is_train)
            keys = train_idx if self.groups is None else self.groups[train_idx]
            if np.unique(keys).size < 2:
                reason = f"probe-train has {np.unique(keys).size} group(s); a group-disjoint dev split needs >= 2"
        return reason

    def evidence_reason(self, kind: TargetKind, min_test_docs: int, min_class_docs: int) -> str | None:
        """The minimum-evidence rule: too few docs for any score to be worth printing, or None.

        A probe-test side needs ``min_test_docs`` docs; multiclass, every class needs
        ``min_class_docs`` docs in probe-train and in probe-test; multilabel, at least one
        class needs ``min_class_docs`` positives on each side. Below it a score of 1.0 with
        a CI of [1, 1] from 2 + 2 docs would look like a finding.
        """
        if self.n_test < min_test_docs:
            return f"too little evidence: {self.n_test} probe-test docs (the minimum is {min_test_docs})"
        train, test = self.y[self.is_train], self.y[~self.is_train]
        if kind == "multiclass":
            classes = np.union1d(train, test)
            n_tr = np.array([np.sum(train == c) for c in classes])
            n_te = np.array([np.sum(test == c) for c in classes])
            short = [f"{c}: {a} train / {b} test" for c, a, b in zip(classes, n_tr, n_te, strict=True)
                     if min(a, b) < min_class_docs]  # fmt: skip
            if short:
                return (
                    f"too little evidence: classes with fewer than {min_class_docs} docs on a side "
                    f"({'; '.join(short[:5])})"
                )
            return None
        if not np.any((train.sum(0) >= min_class_docs) & (test.sum(0) >= min_class_docs)):
            return f"too little evidence: no class has {min_class_docs} positives in both probe-train and probe-test"
        return None

    def overlap_notes(self) -> list[str]:
        """A note when some group has docs on both sides of the train/test split."""
        if self.groups is None:
            return []
        shared = np.intersect1d(self.groups[self.is_train], self.groups[~self.is_train])
        if shared.size:
            return [f"{shared.size} group(s) occur in both probe-train and probe-test (not group-disjoint)"]
        return []


__all__ = ["Docs", "check_inputs"]
