"""Batched MLP probe: learns a planted signal, early-stops on dev, is deterministic; config validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmms_probe_tasks.probe.features import iter_layer_chunks
from lmms_probe_tasks.probe.mlp import MLPConfig, fit_mlp
from lmms_probe_tasks.probe.targets import encode_targets
from tests.probe_fixtures import one_thread  # noqa: F401  (autouse)


def test_mlp_learns_planted_signal_with_early_stopping_and_is_deterministic():
    rng = np.random.default_rng(0)
    n, d = 800, 12
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(2, n, d)).astype(np.float32)
    x[1, :, :3] += 2.5 * np.eye(3)[y]
    is_train = np.arange(n) < 500
    dev = is_train & (np.arange(n) >= 400)
    enc = encode_targets(y, "multiclass", fit_rows=is_train)
    _, _, xs = next(iter_layer_chunks(x, 2, fit_rows=is_train))
    config = MLPConfig(hidden=32, max_epochs=40, patience=4, lr=3e-3)
    model = fit_mlp(xs, enc.targets, is_train & ~dev, dev, loss=enc.loss, config=config, seed=3)
    test = np.flatnonzero(~is_train)
    acc = (model.logits(xs, test).argmax(-1).numpy() == y[test]).mean(1)
    assert acc[1] > 0.85 and acc[0] < 0.5
    assert (model.best_epoch >= 1).all() and (model.best_epoch <= config.max_epochs).all()
    again = fit_mlp(xs, enc.targets, is_train & ~dev, dev, loss=enc.loss, config=config, seed=3)
    assert torch.equal(model.w1, again.w1)
    with pytest.raises(ValueError, match="overlap"):
        fit_mlp(xs, enc.targets, is_train, dev, loss=enc.loss, config=config)


def test_bad_config_raises_with_the_fix():
    with pytest.raises(ValueError, match="hidden=0"):
        MLPConfig(hidden=0)
