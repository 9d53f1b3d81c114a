"""Properties of the statistics around the scores, checked by simulation with known truth.

Control-task applicability, the two-part MDL code, the best-layer probability under
training variability, and the minimum-evidence rule (issue: statistics a researcher can publish).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmms_probe_tasks.probe import ProtocolConfig, run_protocol
from tests.probe_fixtures import one_thread  # noqa: F401  (autouse fixture)


def _fast(**overrides):
    return ProtocolConfig.from_preset("fast", **overrides)


def test_control_not_applicable_when_types_never_recur():
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(2, n, 8)).astype(np.float32)
    is_train = np.arange(n) < 140
    unique = np.array([f"img{i}" for i in range(n)])  # every doc its own type, as an image id
    r = run_protocol(x, y, is_train, kind="multiclass", config=_fast(), types=unique)
    assert r.control_reason.startswith("not applicable") and r.control_shared == 0.0
    assert all(math.isnan(r.control_score[layer]) and math.isnan(r.selectivity[layer]) for layer in r.layers)
    assert all(row["control_reason"] == r.control_reason for row in r.to_rows())
    r = run_protocol(x, y, is_train, kind="multiclass", config=_fast())  # no types at all
    assert "declares no type" in r.control_reason


def test_control_memorised_when_types_recur_with_high_dimensional_features():
    # 20 types, each with its own direction in a 64-d space: a linear probe can memorise any
    # label per type, so the control task scores high and selectivity = score - control.
    rng = np.random.default_rng(1)
    n, n_types = 600, 20
    types = rng.integers(0, n_types, n)
    centres = rng.normal(size=(n_types, 64)) * 3
    x = (centres[types] + rng.normal(size=(n, 64)))[None].astype(np.float32)
    y = (types % 2).astype(np.int64)  # the task label is a function of the type too
    is_train = rng.random(n) < 0.7
    r = run_protocol(x, y, is_train, kind="multiclass", config=_fast(), types=types)
    assert r.control_reason is None and r.control_shared == 1.0
    assert r.control_score[0] > 0.9
    assert r.selectivity[0] == pytest.approx(r.score[0] - r.control_score[0])


def _mdl_data(seed, n=600, d=32):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(2, n, d))
    x[1, :, :3] += 1.2 * np.eye(3)[y]  # layer 1: signal; layer 0: noise
    return x.astype(np.float32), y, rng.random(n) < 0.75


def test_mdl_two_part_code_is_stable_and_never_worse_than_noise():
    x, y, is_train = _mdl_data(0)
    bits = []
    for seed in range(3):  # another seed: another order of the online code
        r = run_protocol(x, y, is_train, kind="multiclass", config=_fast(seed=seed, n_bootstrap=0, controls=False))
        bits.append([r.mdl_codelength_bits[layer] for layer in r.layers])
        cost = math.log2(len(r.config.c_grid) + 1)  # the grid's C values and the uniform code
        for layer in r.layers:  # compression never below 1 by more than the cost of choosing C
            assert (
                r.mdl_uniform_codelength_bits / r.mdl_compression[layer] <= r.mdl_uniform_codelength_bits + cost + 1e-6
            )
        assert r.mdl_compression[1] > r.mdl_compression[0]  # the signal layer compresses better than noise
    bits = np.array(bits)
    spread = (bits.max(0) - bits.min(0)) / bits.mean(0)
    assert (spread < 0.05).all(), spread


def _two_layers(rng, strengths, n=500, d=48):
    y = rng.integers(0, 2, n)
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)
    x = np.stack([np.outer(2 * y - 1, direction) * s + rng.normal(size=(n, d)) for s in strengths])
    return x.astype(np.float32), y, rng.random(n) < 0.6


def test_best_layer_probability_counts_training_variability():
    rng = np.random.default_rng(2)
    confident = 0
    for _ in range(20):  # two layers with identical distributions, independent noise
        x, y, is_train = _two_layers(rng, (0.9, 0.9))
        r = run_protocol(x, y, is_train, kind="multiclass", config=_fast(controls=False, mdl=False, n_bootstrap=200))
        confident += max(r.best_layer_prob.values()) > 0.8
    assert confident <= 2, f"{confident} of 20 datasets named one of two identical layers best with p > 0.8"
    for _ in range(3):  # a planted layer still wins clearly
        x, y, is_train = _two_layers(rng, (0.5, 2.0))
        r = run_protocol(x, y, is_train, kind="multiclass", config=_fast(controls=False, mdl=False, n_bootstrap=200))
        assert r.best_layer_prob[1] >= 0.95


def test_minimum_evidence_rule():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 4, 8)).astype(np.float32)
    r = run_protocol(x, np.array([0, 1, 0, 1]), np.array([True, True, False, False]), kind="multiclass", config=_fast())
    assert r.reason.startswith("too little evidence") and math.isnan(r.score[0]) and math.isnan(r.ci_low[0])
    assert r.best_layer is None
    n = 400
    y = (rng.random(n) < 0.01).astype(np.int64)  # 99:1 and pure noise
    y[:2] = 1
    r = run_protocol(rng.normal(size=(1, n, 8)).astype(np.float32), y, rng.random(n) < 0.5, kind="multiclass",
                     config=_fast())  # fmt: skip
    assert "fewer than 5 docs" in r.reason


def test_c_at_the_grid_edge_is_flagged():
    x, y, is_train = _mdl_data(4)
    r = run_protocol(x[:1], y, is_train, kind="multiclass", config=_fast(c_grid=(10.0, 100.0), n_bootstrap=0))
    assert r.C_at_grid_edge[0]
    assert any("edge of the grid" in note for note in r.notes)


def test_a_layer_with_nonfinite_features_loses_only_itself():
    x, y, is_train = _mdl_data(5)
    x = np.concatenate([x, x[1:]])  # layers 0 (noise), 1 (signal), 2 (signal, to be poisoned)
    x[2, 7, 3] = np.inf
    x[2, 9, 0] = np.nan
    r = run_protocol(x, y, is_train, kind="multiclass", config=_fast(n_bootstrap=50))
    assert "NaN or inf" in r.layer_reason[2] and set(r.layer_reason) == {2}
    rows = {row["layer"]: row for row in r.to_rows()}
    assert math.isnan(rows[2]["score"]) and math.isnan(rows[2]["ci_low"]) and math.isnan(rows[2]["best_layer_prob"])
    assert "NaN or inf" in rows[2]["reason"] and rows[1]["reason"] == ""
    assert r.score[1] > 0.6 and np.isfinite(r.ci_low[1]) and r.best_layer == 1
    clean = run_protocol(x[:2], y, is_train, kind="multiclass", config=_fast(n_bootstrap=50))
    assert r.score[0] == clean.score[0] and r.score[1] == clean.score[1]  # the good layers are untouched
