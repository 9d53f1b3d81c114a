"""Shared helpers of the probe-core tests: one torch thread, planted features, a batched fit-and-predict."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmms_probe_tasks.probe.features import iter_layer_chunks
from lmms_probe_tasks.probe.logreg import fit_logreg
from lmms_probe_tasks.probe.targets import encode_targets, log_proba


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny arrays gain nothing from threads, and OpenMP on an oversubscribed runner is slow.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def planted_layers(n=900, d=24, n_layers=3, n_classes=3, seed=0, dtype=np.float32):
    """Correlated features whose label signal grows with depth: ``(x [L, n, d], y [n], is_train [n])``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    x = rng.normal(size=(n_layers, n, d))
    x[:, :, 5:10] += 1.5 * x[:, :, :1]  # correlated block: an ill-conditioned problem
    strength = np.linspace(0.3, 1.5, n_layers)[:, None, None]
    x[:, :, :n_classes] += strength * np.eye(n_classes)[y][None]
    x[:, :, -1] = 3.0  # a constant feature: StandardScaler leaves it unscaled
    is_train = rng.random(n) < 0.7
    return x.astype(dtype), y, is_train


def fit_predict(x, y, is_train, *, kind, C=1.0, layer_chunk=4):
    """Standardise, fit on probe-train and predict probe-test for every layer and C, with the real API.

    Returns:
        ``(proba [L, G, n_test, n_classes], classes, converged [L, G])``.
    """
    enc = encode_targets(y, kind, fit_rows=is_train)
    grid = np.atleast_1d(np.asarray(C, dtype=np.float64))
    test = np.flatnonzero(~is_train)
    probas, converged = [], []
    for _, _, xs in iter_layer_chunks(x, layer_chunk, fit_rows=is_train):
        model = fit_logreg(xs, enc.targets, is_train.astype(np.float32), grid, loss=enc.loss)
        lp = log_proba(model.logits(xs, test), enc.loss, enc.binary)  # [l, n_test, G, n_classes]
        probas.append(lp.exp().permute(0, 2, 1, 3).numpy())
        converged.append(model.converged)
    return np.concatenate(probas), enc.classes, np.concatenate(converged)
