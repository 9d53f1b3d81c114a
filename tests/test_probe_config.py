"""Protocol settings: presets, overrides and the messages of invalid values."""

from __future__ import annotations

import pytest

from lmms_probe_tasks.probe.config import PRESETS, ProtocolConfig


def test_presets_and_validation_messages():
    fast, paper = ProtocolConfig.from_preset("fast"), ProtocolConfig.from_preset("paper")
    assert fast.n_seeds == 1 and paper.n_seeds == 3 and paper.n_bootstrap == 1000
    assert len(paper.c_grid) > len(fast.c_grid)
    assert ProtocolConfig() == paper and set(PRESETS) == {"fast", "paper"}
    assert ProtocolConfig.from_preset("fast", n_seeds=2).n_seeds == 2
    with pytest.raises(ValueError, match=r"unknown probe preset 'fsat'\. Did you mean 'fast'\? Valid: fast, paper"):
        ProtocolConfig.from_preset("fsat")
    with pytest.raises(ValueError, match=r"unknown ProtocolConfig field 'n_seed'\. Did you mean 'n_seeds'\?"):
        ProtocolConfig.from_preset("fast", n_seed=2)
    with pytest.raises(ValueError, match=r"n_seeds=0 is invalid; valid: an integer >= 1\. Fix: .*n_seeds=3"):
        ProtocolConfig.from_preset("paper", n_seeds=0)
    with pytest.raises(ValueError, match=r"refit='dev' is invalid; valid: train\+dev, train"):
        ProtocolConfig(refit="dev")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"c_grid=\(1.0, 0.1\) is invalid; valid: a non-empty, strictly increasing"):
        ProtocolConfig(c_grid=(1.0, 0.1))
    with pytest.raises(ValueError, match="probe='svm' is invalid; valid: linear, mlp"):
        ProtocolConfig(probe="svm")  # type: ignore[arg-type]
    assert ProtocolConfig(c_grid=[0.1, 1]).c_grid == (0.1, 1.0)  # lists become (hashable) tuples
    assert fast.to_dict()["c_grid"] == list(fast.c_grid)
