"""Target helpers: when labels cannot support a probe, and multi-hot encoding."""

from __future__ import annotations

import numpy as np
import pytest

from lmms_probe_tasks.probe import multi_hot, unusable_reason


def test_unusable_reasons_name_the_counts():
    y = np.array([0, 0, 0, 1, 1])
    assert "probe-test has 1" in unusable_reason(y, np.array([True, True, True, True, False]), "multiclass")
    assert "1 class" in unusable_reason(y, np.array([True, True, True, False, False]), "multiclass")
    assert unusable_reason(np.array([0, 1, 0, 1]), np.array([True, True, False, False]), "multiclass") is None
    constant = np.array([[1, 0], [1, 0], [1, 0], [0, 1]])
    assert "no class that is both" in unusable_reason(constant, np.array([True, True, False, False]), "multilabel")


def test_multi_hot_and_its_range_check():
    np.testing.assert_array_equal(multi_hot([[0, 2], []], 3), [[1, 0, 1], [0, 0, 0]])
    with pytest.raises(ValueError, match="out of range; valid: 0..2"):
        multi_hot([[0, 3]], 3)
