"""Resamples probe-test docs (or their groups) to put percentile intervals and a best-layer distribution on scores.

Each resample rescores the stored test predictions (no refits); the same resamples serve
every layer and seed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from lmms_probe_tasks.probe.metrics import mean_average_precision
from lmms_probe_tasks.probe.targets import TargetKind


def _bootstrap_weights(
    n: int, n_bootstrap: int, rng: np.random.Generator, groups: np.ndarray | None, chunk: int
) -> Iterator[np.ndarray]:
    """Yield ``[b, n]`` resample counts, ``chunk`` resamples at a time."""
    inverse = None
    if groups is not None:
        _, inverse = np.unique(groups, return_inverse=True)
    for b0 in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - b0)
        if inverse is None:
            idx = rng.integers(0, n, size=(b, n))
            counts = np.zeros((b, n))
            np.add.at(counts, (np.repeat(np.arange(b), n), idx.ravel()), 1.0)
        else:
            n_groups = int(inverse.max()) + 1
            gidx = rng.integers(0, n_groups, size=(b, n_groups))
            gcounts = np.zeros((b, n_groups))
            np.add.at(gcounts, (np.repeat(np.arange(b), n_groups), gidx.ravel()), 1.0)
            counts = gcounts[:, inverse]
        yield counts


def bootstrap_layer_scores(
    predictions: np.ndarray,
    y_test: np.ndarray,
    *,
    kind: TargetKind,
    n_bootstrap: int,
    seed: int | Sequence[int] = 0,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Rescore stored probe-test predictions on bootstrap resamples of the test docs.

    Args:
        predictions: Multiclass: ``[S, L, n_test]`` predicted class ids; multilabel:
            ``[S, L, n_test, k]`` scores (S seeds, L layers).
        y_test: ``[n_test]`` class ids or ``[n_test, k]`` 0/1 indicators.
        kind: ``multiclass`` or ``multilabel``.
        n_bootstrap: Resamples.
        seed: Seed of the resampling (the same resamples for every layer and seed).
        groups: ``[n_test]`` group keys to resample groups instead of docs.

    Returns:
        ``[n_bootstrap, L]`` float64 metric per resample and layer, averaged over seeds.
    """
    rng = np.random.default_rng(seed)
    n_seeds, n_layers, n = predictions.shape[:3]
    out = np.empty((n_bootstrap, n_layers))
    row = 0
    if kind == "multiclass":
        correct = (predictions == y_test[None, None]).reshape(n_seeds * n_layers, n).astype(np.float64)
        for counts in _bootstrap_weights(n, n_bootstrap, rng, groups, chunk=max(1, 2**22 // n)):
            acc = (counts @ correct.T) / counts.sum(1, keepdims=True)
            out[row : row + len(counts)] = acc.reshape(-1, n_seeds, n_layers).mean(1)
            row += len(counts)
        return out
    k = y_test.shape[1]
    for counts in _bootstrap_weights(n, n_bootstrap, rng, groups, chunk=max(1, 2**23 // (n * k))):
        acc = np.zeros((len(counts), n_layers))
        for s in range(n_seeds):
            for layer in range(n_layers):
                acc[:, layer] += mean_average_precision(predictions[s, layer], y_test, counts)
        out[row : row + len(counts)] = acc / n_seeds
        row += len(counts)
    return out


__all__ = ["bootstrap_layer_scores"]
