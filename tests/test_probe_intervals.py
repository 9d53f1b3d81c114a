import numpy as np
import pytest
from scipy import stats

from lmms_probe_tasks.probe.best_layer import best_layer_probability, training_replicates
from lmms_probe_tasks.probe.intervals import (
    bca_interval,
    jackknife_blocks,
    score_intervals,
    unit_index,
    wilson_interval,
)


def test_wilson_matches_scipy_for_iid_binary():
    rng = np.random.default_rng(0)
    for n, p in [(50, 0.5), (200, 0.99), (200, 1.0), (1000, 0.8)]:
        correct = (rng.random(n) < p).astype(float)
        low, high = wilson_interval(correct[None], unit_index(n, None), 0.95)
        ref = stats.binomtest(int(correct.sum()), n).proportion_ci(0.95, method="wilson")
        assert low[0] == pytest.approx(ref.low, abs=1e-9) and high[0] == pytest.approx(ref.high, abs=1e-9)


def test_wilson_widens_with_clusters_and_keeps_coverage():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(50), 4)
    units = unit_index(200, groups)
    hits, widths_iid, widths_grp = 0, [], []
    for _ in range(400):
        p_img = rng.beta(0.8 * 2.33, 0.2 * 2.33, 50)  # icc 0.3 around 0.8
        correct = (rng.random(200) < np.repeat(p_img, 4)).astype(float)[None]
        low, high = wilson_interval(correct, units, 0.95)
        hits += low[0] <= 0.8 <= high[0]
        widths_grp.append(high[0] - low[0])
        lo_i, hi_i = wilson_interval(correct, unit_index(200, None), 0.95)
        widths_iid.append(hi_i[0] - lo_i[0])
    assert 0.92 <= hits / 400 <= 0.98
    assert np.mean(widths_grp) > 1.2 * np.mean(widths_iid)


def test_all_correct_small_test_set_is_not_a_point():
    low, high = wilson_interval(np.ones((1, 4)), unit_index(4, None), 0.95)
    assert high[0] == 1.0 and low[0] < 0.6


def test_bca_close_to_scipy_on_a_mean():
    rng = np.random.default_rng(2)
    x = rng.exponential(size=80)
    ref = stats.bootstrap((x,), np.mean, method="BCa", n_resamples=4000, random_state=0).confidence_interval
    idx = rng.integers(0, 80, (4000, 80))
    boot = x[idx].mean(1)[:, None]
    jack = np.array([np.delete(x, i).mean() for i in range(80)])[:, None]
    low, high = bca_interval(boot, np.array([x.mean()]), jack, 0.95)
    assert low[0] == pytest.approx(ref.low, abs=0.05) and high[0] == pytest.approx(ref.high, abs=0.08)


def test_jackknife_blocks_partition_units():
    units = unit_index(12, np.repeat(np.arange(6), 2))
    keeps = jackknife_blocks(units, 3, seed=0)
    assert len(keeps) == 3
    dropped = np.sum([~k for k in keeps], axis=0)
    assert (dropped == 1).all()  # every doc is deleted by exactly one block
    for k in keeps:  # blocks never split an image
        assert (k[0::2] == k[1::2]).all()


def test_score_intervals_multilabel_brackets_the_score():
    from lmms_probe_tasks.probe.bootstrap import bootstrap_layer_scores
    from lmms_probe_tasks.probe.metrics import mean_average_precision

    rng = np.random.default_rng(3)
    y = (rng.random((120, 4)) < 0.3).astype(np.int64)
    scores = (y + rng.normal(size=y.shape)).astype(np.float32)[None, None]
    boot = bootstrap_layer_scores(scores, y, kind="multilabel", n_bootstrap=300, seed=0)
    low, high = score_intervals(scores, y, kind="multilabel", units=unit_index(120, None), level=0.95, boot=boot)
    observed = mean_average_precision(scores[0, 0], y)[0]
    assert low[0] < observed < high[0]


def test_best_layer_identical_split_planted_wins():
    rng = np.random.default_rng(4)
    base = rng.normal(0, 0.01, size=(500, 1))
    same = np.array([0.7, 0.7]) + base + rng.normal(0, 0.01, size=(500, 2))
    prob = best_layer_probability(np.array([0.7, 0.7]), same)
    assert prob == pytest.approx([0.5, 0.5], abs=0.05)
    planted = np.array([0.6, 0.6, 0.9, 0.6]) + rng.normal(0, 0.01, size=(500, 4))
    assert best_layer_probability(np.array([0.6, 0.6, 0.9, 0.6]), planted)[2] > 0.99
    assert np.isnan(best_layer_probability(np.array([np.nan, np.nan]), same)).all()


def test_training_replicates_add_the_half_sample_spread():
    rng = np.random.default_rng(5)
    full = np.zeros((2000, 3))
    halves = rng.normal(0, 0.05, size=(1, 3, 8)).repeat(2000, 0)
    rep = training_replicates(full, halves, rng)
    assert rep.mean(0) == pytest.approx(np.zeros(3), abs=0.01)
    assert rep.std(0) == pytest.approx(halves[0].std(1), rel=0.1)
