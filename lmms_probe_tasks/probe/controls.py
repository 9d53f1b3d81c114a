"""Builds the label sets a probe is trained on: group-disjoint dev splits, control-task and shuffled labels.

For every seed the protocol fits the task labels and, with ``controls``, the control
task of Hewitt & Liang (2019) (one random label per *type*) and a shuffle of the
probe-train labels; each is one :class:`FitSet`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmms_probe_tasks.probe.config import STREAM_CONTROL, STREAM_DEV, STREAM_SHUFFLE, ProtocolConfig
from lmms_probe_tasks.probe.targets import TargetKind, encode_targets, unusable_reason


def as_keys(values: np.ndarray | Sequence[Any], n: int, name: str) -> np.ndarray:
    """Check per-doc keys (groups, types) and return them as an ndarray.

    Args:
        values: ``[n]`` keys (str, int, or mixed Python objects, compared as text).
        n: Number of docs.
        name: Argument name for the error.

    Returns:
        ``[n]`` keys.

    Raises:
        ValueError: Not one key per doc.
    """
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have one entry per doc, shape ({n},); got {arr.shape}")
    if arr.dtype == object:
        arr = arr.astype(str)  # mixed Python objects: compare them as text
    return arr


def group_dev_split(
    is_train: np.ndarray,
    groups: np.ndarray | None,
    *,
    dev_fraction: float,
    seed: int | Sequence[int],
) -> np.ndarray:
    """Carve a dev split out of probe-train so that no group is in both dev and train.

    Whole groups, in a seeded random order, go to dev until dev holds at least
    ``dev_fraction`` of the probe-train docs; at least one group stays on each side.

    Args:
        is_train: ``[n]`` bool, True for probe-train docs.
        groups: ``[n]`` group keys (str or int, e.g. image id); None: every doc its own group.
        dev_fraction: Target share of probe-train docs in dev, in (0, 1).
        seed: Seed (or seed sequence) of the group order.

    Returns:
        ``[n]`` bool, True for dev docs (a subset of probe-train).

    Raises:
        ValueError: Fewer than two groups among the probe-train docs.
    """
    is_train = np.asarray(is_train, dtype=bool)
    train_idx = np.flatnonzero(is_train)
    keys = train_idx if groups is None else as_keys(groups, is_train.size, "groups")[train_idx]
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    if uniq.size < 2:
        raise ValueError(
            f"cannot carve a group-disjoint dev split: probe-train has {uniq.size} group(s) "
            f"({train_idx.size} docs); need >= 2. Fix: pass finer groups or more probe-train docs"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(uniq.size)
    filled = np.cumsum(counts[order])
    n_dev_groups = int(np.searchsorted(filled, dev_fraction * train_idx.size)) + 1
    n_dev_groups = min(max(n_dev_groups, 1), uniq.size - 1)
    dev_group = np.zeros(uniq.size, bool)
    dev_group[order[:n_dev_groups]] = True
    is_dev = np.zeros(is_train.size, bool)
    is_dev[train_idx[dev_group[inverse]]] = True
    return is_dev


def control_task_labels(
    y: np.ndarray, types: np.ndarray, is_train: np.ndarray, *, seed: int | Sequence[int]
) -> np.ndarray:
    """Hewitt & Liang (2019) control labels: one random label per type, fixed for the type.

    Each distinct type draws the label of a random probe-train doc, i.e. a sample of
    the empirical probe-train label distribution (a whole label set, multilabel).

    Args:
        y: ``[n]`` int class ids or ``[n, k]`` 0/1 indicators.
        types: ``[n]`` type keys (e.g. hypothesis text, image id).
        is_train: ``[n]`` bool, True for probe-train docs.
        seed: Seed of the draw.

    Returns:
        Control labels, same shape and dtype as ``y``.
    """
    keys = as_keys(types, y.shape[0], "types")
    _, inverse = np.unique(keys, return_inverse=True)
    train_idx = np.flatnonzero(is_train)
    rng = np.random.default_rng(seed)
    source = train_idx[rng.integers(0, train_idx.size, size=int(inverse.max()) + 1)]
    return y[source[inverse]]


def shuffled_labels(y: np.ndarray, is_train: np.ndarray, *, seed: int | Sequence[int]) -> np.ndarray:
    """Permute the labels of the probe-train docs among themselves; probe-test keeps its labels.

    Args:
        y: ``[n]`` int class ids or ``[n, k]`` 0/1 indicators.
        is_train: ``[n]`` bool.
        seed: Seed of the permutation.

    Returns:
        Labels, same shape and dtype as ``y``.
    """
    out = y.copy()
    train_idx = np.flatnonzero(is_train)
    out[train_idx] = y[np.random.default_rng(seed).permutation(train_idx)]
    return out


@dataclass(frozen=True)
class FitSet:
    """One label set under one seed: what a probe is trained and scored on.

    Attributes:
        name: ``task``, ``control`` or ``shuffled``.
        seed_index: The seed, ``0 .. n_seeds-1``.
        labels: ``[n]`` class ids or ``[n, k]`` indicators (test rows: the labels it is scored on).
        targets: ``[n, K]`` float32 encoded ``labels``.
        train: ``[n]`` bool, probe-train minus dev.
        dev: ``[n]`` bool, this seed's dev split.
    """

    name: str
    seed_index: int
    labels: np.ndarray
    targets: np.ndarray
    train: np.ndarray
    dev: np.ndarray


@dataclass(frozen=True)
class FitSets:
    """Every label set of every seed, and what the dev splits could not support.

    Attributes:
        sets: Per seed, the task set, then ``control`` and ``shuffled`` where run.
        fallback_seeds: Seeds whose dev split cannot select C.
        notes: Sentences for the result (fallback seeds).
        control_shared: Share of probe-test docs whose type occurs in probe-train (NaN: no types).
        control_reason: Why the control task is not applicable (or not run), else None.
    """

    sets: list[FitSet]
    fallback_seeds: list[int]
    notes: list[str]
    control_shared: float = math.nan
    control_reason: str | None = None


def control_applicability(
    types: np.ndarray | None, is_train: np.ndarray, min_shared: float
) -> tuple[float, str | None]:
    """Whether a control task can mean anything here: do the types recur between probe-train and probe-test?

    A control task asks whether a probe can *memorise* one random label per type, so a
    probe-test doc is only informative when its type was seen in probe-train; with unique
    types (an image, a caption) the control is chance by construction.

    Args:
        types: ``[n]`` type keys, or None (the task declares none).
        is_train: ``[n]`` bool.
        min_shared: Least share of probe-test docs whose type occurs in probe-train.

    Returns:
        ``(share, reason)``: the share (NaN without types) and why the control is not
        applicable, or None when it is.
    """
    if types is None:
        return (
            math.nan,
            "not applicable: the task declares no type that recurs across the split (metadata.probe.type_field)",
        )
    seen = np.isin(types[~is_train], types[is_train])
    share = float(seen.mean()) if seen.size else math.nan
    if not share >= min_shared:
        return share, (
            f"not applicable: only {share:.0%} of probe-test docs have a type seen in probe-train "
            f"(control_min_shared {min_shared:.0%}); the control would be chance by construction"
        )
    return share, None


def build_fit_sets(
    y: np.ndarray,
    is_train: np.ndarray,
    groups: np.ndarray | None,
    types: np.ndarray | None,
    *,
    kind: TargetKind,
    classes: np.ndarray,
    config: ProtocolConfig,
) -> FitSets:
    """Draw each seed's dev split and its task, control and shuffled label sets.

    Args:
        y: ``[n]`` class ids or ``[n, k]`` indicators, probe-train rows first.
        is_train: ``[n]`` bool, True for probe-train docs.
        groups: ``[n]`` group keys of the dev split (None: every doc its own group).
        types: ``[n]`` type keys of the control task (None: no control task).
        kind: ``multiclass`` or ``multilabel``.
        classes: The task's class ids (multiclass: every set shares these target columns).
        config: The settings (seeds, dev fraction, controls).

    Returns:
        The sets, with the seeds that must borrow a C, the notes to report and whether the
        control task applies (:func:`control_applicability`).
    """
    notes: list[str] = []
    label_sets = ["task"]
    shared, control_reason = control_applicability(types, is_train, config.control_min_shared)
    if config.controls:
        if control_reason is None:
            label_sets.append("control")
        label_sets.append("shuffled")
    else:
        control_reason = "not run: controls=False"
    train_idx = np.flatnonzero(is_train)
    sets: list[FitSet] = []
    fallback_seeds: list[int] = []
    for s in range(config.n_seeds):
        is_dev = group_dev_split(is_train, groups, dev_fraction=config.dev_fraction, seed=(config.seed, s, STREAM_DEV))
        inner = is_train & ~is_dev
        inner_reason = unusable_reason(y[train_idx], inner[train_idx], kind)
        if inner_reason is not None:
            fallback_seeds.append(s)
            notes.append(f"seed {s}: dev split cannot select C ({inner_reason.replace('probe-test', 'dev')})")
        for name in label_sets:
            if name == "task":
                labels = y
            elif name == "control":
                labels = control_task_labels(y, types, is_train, seed=(config.seed, s, STREAM_CONTROL))  # type: ignore[arg-type]
            else:
                labels = shuffled_labels(y, is_train, seed=(config.seed, s, STREAM_SHUFFLE))
            targets = encode_targets(labels, kind, classes=classes if kind == "multiclass" else None).targets
            sets.append(FitSet(name, s, labels, targets, inner, is_dev))
    return FitSets(sets, fallback_seeds, notes, shared, control_reason)


__all__ = [
    "FitSet",
    "FitSets",
    "as_keys",
    "build_fit_sets",
    "control_applicability",
    "control_task_labels",
    "group_dev_split",
    "shuffled_labels",
]
