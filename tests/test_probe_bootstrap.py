"""Bootstrap of probe-test scores, and the best-layer probability read from it."""

from __future__ import annotations

import numpy as np

from lmms_probe_tasks.probe.best_layer import best_layer_probability
from lmms_probe_tasks.probe.bootstrap import bootstrap_layer_scores


def test_bootstrap_and_best_layer_distribution():
    rng = np.random.default_rng(0)
    y_test = rng.integers(0, 2, 300)
    good = np.where(rng.random(300) < 0.9, y_test, 1 - y_test)
    preds = np.stack([np.stack([1 - y_test, good, good])])  # [1 seed, 3 layers, n]
    boot = bootstrap_layer_scores(preds, y_test, kind="multiclass", n_bootstrap=200, seed=0)
    assert boot.shape == (200, 3) and (boot[:, 0] == 0).all()
    prob = best_layer_probability(boot.mean(0), boot)
    np.testing.assert_allclose(prob, [0, 0.5, 0.5])  # identical layers: every tie split evenly
