"""Probing protocol: properties on synthetic arrays with a planted signal (no model, no harness)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lmms_probe_tasks.probe import MLPConfig, ProtocolConfig, run_protocol
from tests.probe_fixtures import one_thread  # noqa: F401  (autouse)

SIGNAL = 3


def _planted(n=900, d=16, n_layers=6, strength=2.0, seed=0):
    """3-class labels decodable (linearly) only at layer SIGNAL; 3 docs per image group."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n_layers, n, d)).astype(np.float32)
    x[min(SIGNAL, n_layers - 1), :, :3] += strength * np.eye(3)[y]
    groups = np.arange(n) // 3
    is_train = groups < int(0.7 * n / 3)  # image-disjoint train/test
    return x, y, is_train, groups


def _fast(**overrides):
    return ProtocolConfig.from_preset("fast", **overrides)


@pytest.fixture(scope="module")
def planted_result():
    torch.set_num_threads(1)
    x, y, is_train, groups = _planted()
    types = np.random.default_rng(5).integers(0, 40, len(y))  # 40 types shared by train and test
    config = _fast(n_seeds=2, n_bootstrap=300)
    return run_protocol(x, y, is_train, kind="multiclass", config=config, groups=groups, types=types)


def test_planted_signal_peaks_and_its_ci_excludes_the_neighbours(planted_result):
    r = planted_result
    assert r.best_layer == SIGNAL
    assert r.score[SIGNAL] > 0.8
    assert r.ci_low[SIGNAL] > max(r.score[SIGNAL - 1], r.score[SIGNAL + 1])
    assert all(r.ci_low[layer] <= r.score[layer] <= r.ci_high[layer] for layer in r.layers)
    assert r.best_layer_prob[SIGNAL] > 0.95
    assert math.isclose(sum(r.best_layer_prob.values()), 1.0)
    assert all(r.score[layer] < 0.5 for layer in r.layers if layer != SIGNAL)
    assert all(r.converged.values())
    assert all(len(r.chosen_C_per_seed[layer]) == 2 for layer in r.layers)
    assert all(c in r.config.c_grid for cs in r.chosen_C_per_seed.values() for c in cs)


def test_controls_shuffled_chance_and_selectivity(planted_result):
    r = planted_result
    chance = r.majority_baseline
    assert 0.25 < chance < 0.45
    # Shuffled probe-train labels carry no information: chance everywhere, also at the signal layer.
    assert all(abs(r.shuffled_score[layer] - chance) < 0.1 for layer in r.layers)
    # Per-type random labels are not in the features: control near chance, selectivity high.
    assert all(abs(r.control_score[layer] - chance) < 0.1 for layer in r.layers)
    assert r.selectivity[SIGNAL] > 0.4
    assert all(abs(r.selectivity[layer]) < 0.15 for layer in r.layers if layer != SIGNAL)


def test_mdl_compresses_most_at_the_signal_layer(planted_result):
    r = planted_result
    assert r.mdl_uniform_codelength_bits == pytest.approx(r.n_train * math.log2(3))
    assert r.mdl_compression[SIGNAL] > 1.2
    assert all(r.mdl_compression[SIGNAL] > r.mdl_compression[layer] + 0.3 for layer in r.layers if layer != SIGNAL)
    assert r.mdl_codelength_bits[SIGNAL] == pytest.approx(r.mdl_uniform_codelength_bits / r.mdl_compression[SIGNAL])


def test_rows_are_plain_data_one_per_layer(planted_result):
    rows = planted_result.to_rows()
    assert [row["layer"] for row in rows] == list(range(6))
    assert rows[0]["relative_depth"] == 0.0 and rows[-1]["relative_depth"] == 1.0
    for row in rows:
        assert all(isinstance(v, (int, float, str, bool)) for v in row.values())
        assert row["metric"] == "accuracy" and row["n_seeds"] == 2


def test_control_task_catches_a_probe_that_memorises_types():
    # Hewitt & Liang's point: when the features identify the type (here: one of 12 shared
    # types, one-hot at layer 1) a probe can learn any per-type labelling, so the control
    # task scores far above chance and selectivity is low even though the task score is high.
    rng = np.random.default_rng(0)
    n, n_types = 900, 12
    types = rng.integers(0, n_types, n)
    type_label = rng.integers(0, 3, n_types)
    y = type_label[types]  # the task label is a function of the type
    x = rng.normal(size=(2, n, 16)).astype(np.float32)
    x[1, :, :n_types] += 3.0 * np.eye(n_types)[types]
    is_train = np.arange(n) < 600
    r = run_protocol(x, y, is_train, kind="multiclass", config=_fast(n_bootstrap=20, mdl=False), types=types)
    assert r.score[1] > 0.7
    assert r.control_score[1] > 0.7  # per-type random labels are learnable too
    assert abs(r.selectivity[1]) < 0.15 and r.control_score[1] > r.control_score[0] + 0.2


def test_refit_train_only_and_group_bootstrap():
    x, y, is_train, groups = _planted(n=450, n_layers=4)
    config = _fast(n_bootstrap=100, refit="train", bootstrap_unit="group", controls=False, mdl=False)
    r = run_protocol(x, y, is_train, kind="multiclass", config=config, groups=groups)
    assert r.best_layer == SIGNAL and r.ci_low[SIGNAL] < r.score[SIGNAL] < r.ci_high[SIGNAL]
    assert math.isnan(r.mdl_compression[SIGNAL]) and math.isnan(r.control_score[SIGNAL])


def test_fixed_seed_is_deterministic_and_seeds_change_the_split():
    x, y, is_train, groups = _planted(n=450, n_layers=3)
    config = _fast(n_bootstrap=50)
    a = run_protocol(x, y, is_train, kind="multiclass", config=config, groups=groups)
    b = run_protocol(x, y, is_train, kind="multiclass", config=config, groups=groups)
    # JSON text compares NaN equal to NaN, unlike dict equality.
    assert json.dumps(a.to_rows()) == json.dumps(b.to_rows())
    other = run_protocol(x, y, is_train, kind="multiclass", config=_fast(n_bootstrap=50, seed=7), groups=groups)
    assert json.dumps(other.to_rows()) != json.dumps(a.to_rows())


def test_memmap_input_and_chunking_give_the_same_result(tmp_path):
    x, y, is_train, groups = _planted(n=450, n_layers=5)
    path = tmp_path / "features.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=x.shape)
    for layer in range(x.shape[0]):  # written layer by layer, as a real cache would be
        mm[layer] = x[layer]
    mm.flush()
    mm = np.load(path, mmap_mode="r")
    config = _fast(n_bootstrap=50, controls=False)
    one = run_protocol(mm, y, is_train, kind="multiclass", config=_fast(n_bootstrap=50, controls=False, layer_chunk=1))
    whole = run_protocol(x.astype(np.float16), y, is_train, kind="multiclass", config=config)
    for layer in one.layers:
        assert one.score[layer] == pytest.approx(whole.score[layer], abs=1e-9)
        assert one.chosen_C[layer] == whole.chosen_C[layer]
        assert one.mdl_codelength_bits[layer] == pytest.approx(whole.mdl_codelength_bits[layer], rel=1e-3)


def test_multilabel_planted_signal_and_majority_map():
    rng = np.random.default_rng(0)
    n, d, k = 600, 12, 4
    y = (rng.random((n, k)) < 0.3).astype(int)
    x = rng.normal(size=(3, n, d)).astype(np.float32)
    x[1, :, :k] += 2.0 * y
    is_train = np.arange(n) < 420
    r = run_protocol(x, y, is_train, kind="multilabel", config=_fast(n_bootstrap=50, mdl=True))
    assert r.metric == "mAP" and r.best_layer == 1
    assert r.score[1] > 0.8 and r.score[0] < 0.5
    assert r.majority_baseline == pytest.approx(y[~is_train].mean(0).mean(), abs=1e-9)
    assert r.mdl_compression[1] > r.mdl_compression[0]
    assert math.isnan(r.macro_f1[1])
    assert r.control_reason.startswith("not applicable") and math.isnan(r.control_score[1])


def test_mlp_probe_runs_the_same_protocol():
    x, y, is_train, groups = _planted(n=600)
    x = x[2:5]  # layer 1 of this slice carries the signal
    config = _fast(probe="mlp", n_bootstrap=50, mlp=MLPConfig(hidden=32, max_epochs=25, patience=3, lr=3e-3))
    r = run_protocol(x, y, is_train, kind="multiclass", config=config, groups=groups)
    assert r.best_layer == 1 and r.score[1] > 0.75
    assert all(math.isnan(c) for c in r.chosen_C.values())


def test_unusable_data_gives_nan_with_reason():
    x = np.zeros((2, 6, 3), np.float32)
    y = np.array([0, 0, 0, 1, 1, 1])
    one_class_train = np.array([True, True, True, False, False, False])
    r = run_protocol(x, y, one_class_train, kind="multiclass", config=_fast())
    assert r.reason and "1 class" in r.reason
    assert all(math.isnan(v) for v in r.score.values())
    assert r.to_rows()[0]["reason"] == r.reason


def test_bad_inputs_raise():
    x, y, is_train, groups = _planted(n=90, n_layers=2)
    with pytest.raises(ValueError, match=r"x must be \[n_layers, n_docs, hidden\]"):
        run_protocol(x[0], y, is_train, kind="multiclass", config=_fast())
    with pytest.raises(ValueError, match="is_train must be a"):
        run_protocol(x, y, is_train.astype(int), kind="multiclass", config=_fast())
    with pytest.raises(ValueError, match=r"groups must have one entry per doc"):
        run_protocol(x, y, is_train, kind="multiclass", config=_fast(), groups=groups[:5])
    with pytest.raises(ValueError, match="kind 'regression' is not supported"):
        run_protocol(x, y, is_train, kind="regression", config=_fast())  # type: ignore[arg-type]
