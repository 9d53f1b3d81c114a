"""Probe core: properties on synthetic arrays (no model, no harness)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmms_probe_tasks.probe import LayerScore, ProbeConfig, multi_hot, score_layer, summarize, unusable_reason


def _planted(n: int = 300, d: int = 16, n_layers: int = 6, signal_layer: int = 3, seed: int = 0):
    """Features where the 3-class label is linearly decodable only at ``signal_layer``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n_layers, n, d)).astype(np.float32)
    x[signal_layer, :, :3] += 3.0 * np.eye(3)[y]
    is_train = np.arange(n) < 2 * n // 3
    return x, y, is_train


def test_planted_signal_peaks_at_its_layer():
    x, y, is_train = _planted()
    scores = {layer: score_layer(x[layer], y, is_train, ProbeConfig()) for layer in range(x.shape[0])}
    summary = summarize(scores)
    assert summary["best_layer"] == 3
    assert scores[3].score > 0.9
    assert all(scores[layer].score < 0.6 for layer in scores if layer != 3)


def test_shuffled_labels_score_chance():
    x, y, is_train = _planted(n=600)
    rng = np.random.default_rng(1)
    shuffled = rng.permutation(y)
    score = score_layer(x[3], shuffled, is_train, ProbeConfig())
    assert abs(score.score - 1 / 3) < 0.1


def test_multilabel_map_planted_and_absent_classes():
    rng = np.random.default_rng(0)
    n, d, k = 400, 12, 4
    y = (rng.random((n, k)) < 0.4).astype(int)
    y[:, 3] = 0  # never present: must be excluded from mAP, not crash
    x = rng.normal(size=(n, d)) + 2.5 * np.pad(y, ((0, 0), (0, d - k)))
    is_train = np.arange(n) < 300
    score = score_layer(x, y, is_train, ProbeConfig(kind="multilabel"))
    assert score.score > 0.9
    assert score.extra["n_classes_scored"] == 3
    noise = score_layer(rng.normal(size=(n, d)), y, is_train, ProbeConfig(kind="multilabel"))
    assert noise.score < 0.6


def test_unusable_data_gives_nan_with_reason():
    x = np.zeros((5, 3))
    y = np.array([0, 0, 0, 1, 1])
    one_test = np.array([True, True, True, True, False])
    s = score_layer(x, y, one_test, ProbeConfig())
    assert math.isnan(s.score) and "probe-test has 1" in s.reason
    one_class = np.array([True, True, True, False, False])
    s = score_layer(x, y, one_class, ProbeConfig())
    assert math.isnan(s.score) and "1 class" in s.reason
    assert unusable_reason(np.array([0, 1, 0, 1]), np.array([True, True, False, False]), "multiclass") is None


def test_summary_all_nan_and_ties():
    nan = LayerScore(math.nan, 0, 0, reason="x")
    assert math.isnan(summarize({0: nan, 1: nan})["best_layer"])
    s = summarize({0: LayerScore(0.5, 1, 1), 1: LayerScore(0.7, 1, 1), 2: LayerScore(0.7, 1, 1)})
    assert s == {"best_layer": 1.0, "best": 0.7, "last": 0.7}


def test_config_validation_messages():
    with pytest.raises(ValueError, match="valid: multiclass, multilabel"):
        ProbeConfig(kind="regression")
    with pytest.raises(ValueError, match="positive"):
        ProbeConfig(C=0)
    with pytest.raises(ValueError, match="out of range; valid: 0..2"):
        multi_hot([[0, 3]], 3)


def test_float16_features_match_float32():
    x, y, is_train = _planted()
    a = score_layer(x[3], y, is_train, ProbeConfig())
    b = score_layer(x[3].astype(np.float16), y, is_train, ProbeConfig())
    assert abs(a.score - b.score) <= 0.01
