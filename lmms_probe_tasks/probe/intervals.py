"""Confidence intervals of each layer's probe-test score that keep their coverage at high scores, small n and clusters.

What an interval is an interval *of*: the expected probe-test score of the probes that were
fitted in this run (the mean over seeds of each fitted probe's accuracy / mAP on the test
population), i.e. uncertainty from the finite probe-test sample only. It is not an interval
of the layer's score over other training sets (that variability enters the best-layer
probability, :mod:`lmms_probe_tasks.probe.best_layer`).

* **Accuracy**: a Wilson score interval with an *effective* sample size. The variance of the
  seed-averaged accuracy is estimated with the cluster-robust (linearised ratio) formula over
  the resampling units (images when the task has groups, else docs), and ``n_eff =
  p(1 - p) / var`` (Kish's design effect). Wilson keeps coverage near 1 where a percentile
  bootstrap collapses to ``[1, 1]``; when no error (or no success) is seen the variance is 0
  and ``n_eff`` falls back to the number of units (the evidence cannot exceed them); it never
  exceeds the number of docs.
* **mAP**: the bias-corrected and accelerated (BCa) bootstrap over the same units, the
  acceleration from a grouped (delete-a-block) jackknife.

``benchmarks/ci_coverage.py`` measures the coverage of both by simulation with known truth.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def unit_index(n: int, groups: np.ndarray | None) -> np.ndarray:
    """Resampling unit of every doc: its group's index, or the doc itself.

    Args:
        n: Number of docs.
        groups: ``[n]`` group keys, or None (every doc its own unit).

    Returns:
        ``[n]`` int64 unit ids in ``0 .. n_units - 1``.
    """
    if groups is None:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.asarray(groups), return_inverse=True)[1].astype(np.int64).reshape(n)


def wilson_interval(correct: np.ndarray, units: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a (clustered) mean of per-doc correctness, one per row.

    Args:
        correct: ``[L, n]`` per-doc correctness in ``[0, 1]`` (e.g. the mean over seeds of 0/1).
        units: ``[n]`` resampling unit per doc (:func:`unit_index`).
        level: Coverage, e.g. 0.95.

    Returns:
        ``(low, high)``, each ``[L]`` float64.
    """
    correct = np.atleast_2d(np.asarray(correct, dtype=np.float64))
    n = correct.shape[1]
    n_units = int(units.max()) + 1 if n else 0
    p = correct.mean(1)
    per_unit = np.stack([np.bincount(units, row, n_units) for row in correct])  # [L, G]
    size = np.bincount(units, minlength=n_units).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = ((per_unit - p[:, None] * size) ** 2).sum(1) / n**2  # iid docs: p(1 - p) / n, i.e. plain Wilson
        n_eff = np.where((var > 0) & (p > 0) & (p < 1), p * (1 - p) / var, float(n_units))
    # Averaging seeds whose refits err on the same docs adds no documents: never more than n.
    n_eff = np.minimum(n_eff, float(n))
    z = stats.norm.ppf(0.5 + level / 2)
    denom = 1 + z**2 / n_eff
    centre = (p + z**2 / (2 * n_eff)) / denom
    half = z * np.sqrt(p * (1 - p) / n_eff + z**2 / (4 * n_eff**2)) / denom
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def jackknife_blocks(units: np.ndarray, n_blocks: int, seed: int | tuple[int, ...]) -> list[np.ndarray]:
    """Partition the units at random into at most ``n_blocks`` blocks for a delete-a-block jackknife.

    Args:
        units: ``[n]`` unit ids.
        n_blocks: Most blocks (the jackknife costs one score evaluation per block).
        seed: Seed of the partition.

    Returns:
        One ``[n]`` bool mask per block: the docs *kept* when that block is deleted.
    """
    n_units = int(units.max()) + 1
    block_of_unit = np.random.default_rng(seed).permutation(n_units) % min(n_blocks, n_units)
    block = block_of_unit[units]
    return [block != b for b in range(int(block_of_unit.max()) + 1)]


def bca_interval(
    boot: np.ndarray, observed: np.ndarray, jack: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """BCa bootstrap interval per column (Efron 1987), from resamples and jackknife values.

    Args:
        boot: ``[B, L]`` score of each bootstrap resample (NaN ignored).
        observed: ``[L]`` score on the full sample.
        jack: ``[J, L]`` score with each jackknife block deleted.
        level: Coverage, e.g. 0.95.

    Returns:
        ``(low, high)``, each ``[L]`` float64 (NaN where a column has no finite resample).
    """
    low, high = np.full(observed.shape, np.nan), np.full(observed.shape, np.nan)
    alpha = np.array([0.5 - level / 2, 0.5 + level / 2])
    for j in range(observed.size):
        b = boot[:, j][np.isfinite(boot[:, j])]
        if b.size == 0 or not np.isfinite(observed[j]):
            continue
        share = (np.sum(b < observed[j]) + 0.5 * np.sum(b == observed[j])) / b.size
        z0 = stats.norm.ppf(np.clip(share, 1 / (2 * b.size), 1 - 1 / (2 * b.size)))
        d = np.nanmean(jack[:, j]) - jack[:, j]
        d = d[np.isfinite(d)]
        denom = 6 * np.sum(d**2) ** 1.5
        a = np.sum(d**3) / denom if denom > 0 else 0.0
        zs = stats.norm.ppf(alpha)
        q = stats.norm.cdf(z0 + (z0 + zs) / (1 - a * (z0 + zs)))
        low[j], high[j] = np.quantile(b, q)
    return low, high


def score_intervals(
    predictions: np.ndarray,
    y_test: np.ndarray,
    *,
    kind: str,
    units: np.ndarray,
    level: float,
    boot: np.ndarray,
    seed: int | tuple[int, ...] = 0,
    n_blocks: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """The reported interval of every layer's score: Wilson (accuracy) or BCa (mAP).

    Args:
        predictions: Multiclass ``[S, L, n]`` class ids; multilabel ``[S, L, n, k]`` scores.
        y_test: ``[n]`` class ids or ``[n, k]`` 0/1 indicators.
        kind: ``multiclass`` or ``multilabel``.
        units: ``[n]`` resampling unit per test doc (:func:`unit_index`).
        level: Coverage, e.g. 0.95.
        boot: ``[B, L]`` bootstrap scores over the same units (multilabel only; may be empty
            for multiclass).
        seed: Seed of the jackknife blocks.
        n_blocks: Most jackknife blocks (multilabel).

    Returns:
        ``(low, high)``, each ``[L]``.
    """
    from lmms_probe_tasks.probe.metrics import mean_average_precision

    if kind == "multiclass":
        correct = (predictions == y_test[None, None]).mean(axis=0)  # [L, n]: mean over seeds
        return wilson_interval(correct, units, level)
    n_seeds, n_layers = predictions.shape[:2]

    def score(rows: np.ndarray) -> np.ndarray:
        return np.array(
            [np.mean([mean_average_precision(predictions[s, i][rows], y_test[rows])[0] for s in range(n_seeds)])
             for i in range(n_layers)]
        )  # fmt: skip

    observed = score(np.ones(y_test.shape[0], bool))
    jack = np.stack([score(keep) for keep in jackknife_blocks(units, n_blocks, seed)])
    return bca_interval(boot, observed, jack, level)
