"""How likely each layer is the best one, counting the probe's training variability and the test sample.

A bootstrap of the test set alone treats every fitted probe as fixed, so two layers of
identical quality whose probes happened to fit a little differently look confidently
different. Here every replicate combines

1. a resample of the probe-test units (images when the task has groups) — test variability;
2. for every layer independently, one of ``n_halves`` probes refitted on a random
   group-disjoint *half* of probe-train, as a deviation from the mean of those refits —
   training variability. Half-sampling is the classical choice: the spread of statistics over
   random halves of a sample approximates the sampling spread of the full-sample statistic
   (McCarthy 1969), so no refit on a full bootstrap sample is needed;

and the replicates are then shrunk toward the mean over layers by the empirical-Bayes
(James–Stein) factor ``lam = tau² / (tau² + sigma²)``, where ``sigma²`` is the mean replicate
spread of the replicates' noise across layers and ``tau²`` the between-layer variance of the
observed scores beyond it. Each draw is a posterior draw of the
true scores (shrunk mean, spread ``sqrt(lam)`` times a replicate's noise) plus the noise of
an independent rerun (another replicate's), so the result is the probability that a
*replication* of the whole run names the layer best: the share of draws in which it scores
highest (ties split evenly). Layers whose differences are within noise share it instead of
one of them collecting it by chance; a layer that stands out keeps it.
"""

from __future__ import annotations

import numpy as np


def training_replicates(full: np.ndarray, halves: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add one half-sample refit's deviation per layer to every test-bootstrap replicate.

    Args:
        full: ``[B, L]`` score of the full-data probes on each test resample.
        halves: ``[B, L, R]`` score of each of ``R`` half-sample refits on the same resamples.
        rng: Draws which refit each (replicate, layer) uses.

    Returns:
        ``[B, L]`` replicates carrying test and training variability.
    """
    n_boot, n_layers, n_halves = halves.shape
    pick = rng.integers(0, n_halves, size=(n_boot, n_layers))
    chosen = np.take_along_axis(halves, pick[..., None], axis=2)[..., 0]
    return full + chosen - halves.mean(axis=2)


def best_layer_probability(observed: np.ndarray, replicates: np.ndarray) -> np.ndarray:
    """Probability of each layer being the best, from replicates shrunk by empirical Bayes.

    Args:
        observed: ``[L]`` score per layer (NaN: never best).
        replicates: ``[B, L]`` replicate scores (see :func:`training_replicates`).

    Returns:
        ``[L]`` probabilities summing to 1; all NaN when there is no finite score or no replicate.
    """
    observed = np.asarray(observed, dtype=np.float64)
    ok = np.isfinite(observed) & np.isfinite(replicates).all(axis=0)
    out = np.full(observed.shape, np.nan)
    if replicates.shape[0] == 0 or not ok.any():
        return out
    m, rep = observed[ok], replicates[:, ok]
    noise = rep - rep.mean(axis=0)
    # Only differences between layers decide the argmax: the noise that counts is the spread
    # of the replicates across layers (the test resample moves correlated layers together).
    sigma2 = float(noise.var(axis=1, ddof=1).mean()) if m.size > 1 else 0.0
    tau2 = max(0.0, float(m.var(ddof=1)) - sigma2) if m.size > 1 else 0.0
    lam = tau2 / (tau2 + sigma2) if tau2 + sigma2 > 0 else 1.0
    # A replicate = the true scores (posterior: shrunk mean, spread sqrt(lam) * noise) seen
    # through an independent rerun (its own noise, another replicate's): the probability
    # that a replication of the whole run names this layer best.
    rerun = noise[np.random.default_rng(0).permutation(noise.shape[0])]
    draws = m.mean() + lam * (m - m.mean()) + np.sqrt(lam) * noise + rerun
    top = draws >= draws.max(axis=1, keepdims=True) - 1e-12
    out[:] = 0.0
    out[ok] = (top / top.sum(axis=1, keepdims=True)).mean(axis=0)
    return out
