"""Puts uncertainty on every layer's score: the reported interval and the probability that the layer is best."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmms_probe_tasks.probe.best_layer import best_layer_probability, training_replicates
from lmms_probe_tasks.probe.bootstrap import bootstrap_layer_scores
from lmms_probe_tasks.probe.config import STREAM_BOOT, STREAM_HALF, STREAM_JACK, ProtocolConfig
from lmms_probe_tasks.probe.controls import group_dev_split
from lmms_probe_tasks.probe.inputs import Docs
from lmms_probe_tasks.probe.intervals import score_intervals, unit_index
from lmms_probe_tasks.probe.metrics import layer_scores
from lmms_probe_tasks.probe.targets import TargetKind


@dataclass(frozen=True)
class Spread:
    """Intervals and best-layer probabilities (``[L]`` each) and what the interval is."""

    low: np.ndarray
    high: np.ndarray
    best: np.ndarray
    method: str


def uncertainty(
    task_pred: np.ndarray,
    half_pred: np.ndarray,
    y_test: np.ndarray,
    docs: Docs,
    kind: TargetKind,
    config: ProtocolConfig,
    score: np.ndarray,
    notes: list[str],
) -> Spread:
    """The reported interval of every layer's score and the probability that each layer is best.

    Args:
        task_pred: ``[S, L, n_test]`` (or ``[S, L, n_test, k]``) test predictions of the task probes.
        half_pred: ``[R, L, ...]`` test predictions of the half-sample refits.
        y_test: Probe-test labels.
        docs: The docs (groups give the resampling units).
        kind: ``multiclass`` or ``multilabel``.
        config: Bootstrap size, level, unit, seeds.
        score: ``[L]`` the reported scores.
        notes: Gets a sentence when no probability can be computed.

    Returns:
        Intervals, best-layer probabilities and what the interval is.
    """
    nan = np.full(score.size, np.nan)
    if not config.n_bootstrap:
        return Spread(nan, nan, nan, "none (n_bootstrap=0)")
    test_groups = docs.groups[~docs.is_train] if docs.groups is not None else None
    groups = test_groups if config.bootstrap_unit == "group" else None
    boot = bootstrap_layer_scores(
        task_pred, y_test, kind=kind, n_bootstrap=config.n_bootstrap, seed=(config.seed, 0, STREAM_BOOT),
        groups=groups,
    )  # fmt: skip
    low, high = score_intervals(
        task_pred, y_test, kind=kind, units=unit_index(docs.n_test, groups), level=config.ci_level, boot=boot,
        seed=(config.seed, 0, STREAM_JACK),
    )  # fmt: skip
    unit = "images (groups)" if groups is not None else "docs"
    what = (
        "Wilson score interval, effective n from the cluster-robust variance"
        if kind == "multiclass"
        else "BCa bootstrap"
    )
    method = f"{config.ci_level:.0%} {what}, over probe-test {unit}: the fitted probes' expected test score"
    if not config.n_halves:
        notes.append("best_layer_prob not computed: n_halves=0 (no training replicates)")
        return Spread(low, high, nan, method)
    halves = np.stack([layer_scores(pred, y_test, kind) for pred in half_pred])  # [R, L]
    rng = np.random.default_rng((config.seed, 0, STREAM_HALF))
    replicates = training_replicates(boot, np.broadcast_to(halves.T[None], (*boot.shape, len(halves))), rng)
    return Spread(low, high, best_layer_probability(score, replicates), method)


def at_grid_edge(chosen: np.ndarray, config: ProtocolConfig, notes: list[str]) -> np.ndarray:
    """``[L]`` bool: the median chosen C sits at an end of the grid (the grid may be too narrow).

    Args:
        chosen: ``[S, L]`` C chosen per seed and layer.
        config: The grid and the probe kind.
        notes: Gets one sentence when more than a quarter of the layers are at an edge.
    """
    if chosen.shape[0] == 0 or config.probe != "linear" or len(config.c_grid) < 2:
        return np.zeros(chosen.shape[1], bool)
    median = np.median(chosen, axis=0)
    edge = np.isclose(median, config.c_grid[0]) | np.isclose(median, config.c_grid[-1])
    if edge.mean() > 0.25:
        notes.append(
            f"C at the edge of the grid for {int(edge.sum())} of {edge.size} layers "
            f"({config.c_grid[0]:g} .. {config.c_grid[-1]:g}): widen protocol.c_grid"
        )
    return edge


__all__ = ["Spread", "at_grid_edge", "uncertainty"]


def half_masks(docs: Docs, config: ProtocolConfig) -> np.ndarray:
    """``[n_halves, n_train]`` bool: random group-disjoint halves of probe-train (training replicates)."""
    masks = [
        group_dev_split(docs.is_train, docs.groups, dev_fraction=0.5, seed=(config.seed, r, STREAM_HALF))
        for r in range(config.n_halves)
    ]
    masks = [m[: docs.n_train] for m in masks]  # probe-train rows come first
    return np.array(masks, dtype=bool).reshape(config.n_halves, docs.n_train)
