"""Label sets of the protocol: group-disjoint dev splits, control-task and shuffled labels."""

from __future__ import annotations

import numpy as np
import pytest

from lmms_probe_tasks.probe.controls import control_task_labels, group_dev_split, shuffled_labels


def test_control_task_labels_are_fixed_per_type_and_follow_the_label_distribution():
    rng = np.random.default_rng(0)
    y = rng.choice(3, size=3000, p=[0.6, 0.3, 0.1])
    types = rng.integers(0, 1000, 3000)
    is_train = np.arange(3000) < 2000
    control = control_task_labels(y, types, is_train, seed=1)
    for t in np.unique(types)[:50]:
        assert np.unique(control[types == t]).size == 1
    per_type = np.array([control[types == t][0] for t in np.unique(types)])
    np.testing.assert_allclose(np.bincount(per_type, minlength=3) / per_type.size, [0.6, 0.3, 0.1], atol=0.06)
    assert not np.array_equal(control, control_task_labels(y, types, is_train, seed=2))
    shuffled = shuffled_labels(y, is_train, seed=0)
    assert np.array_equal(shuffled[~is_train], y[~is_train])
    assert np.array_equal(np.sort(shuffled[is_train]), np.sort(y[is_train]))


def test_dev_split_is_group_disjoint_and_seeded():
    rng = np.random.default_rng(0)
    n = 1000
    groups = rng.integers(0, 150, n).astype(str)
    is_train = rng.random(n) < 0.8
    dev = group_dev_split(is_train, groups, dev_fraction=0.2, seed=(0, 1))
    assert not (dev & ~is_train).any()
    assert not set(groups[dev]) & set(groups[is_train & ~dev])
    assert 0.15 < dev.sum() / is_train.sum() < 0.3
    assert np.array_equal(dev, group_dev_split(is_train, groups, dev_fraction=0.2, seed=(0, 1)))
    assert not np.array_equal(dev, group_dev_split(is_train, groups, dev_fraction=0.2, seed=(0, 2)))
    with pytest.raises(ValueError, match="1 group"):
        group_dev_split(is_train, np.zeros(n, int), dev_fraction=0.2, seed=0)
