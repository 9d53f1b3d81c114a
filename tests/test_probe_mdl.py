"""Online-code block ends (the codelength itself is tested through the protocol)."""

from __future__ import annotations

import numpy as np

from lmms_probe_tasks.probe.mdl import mdl_block_ends


def test_mdl_block_ends():
    ends = mdl_block_ends(10_000)
    assert ends[0] == 10 and ends[-1] == 10_000 and (np.diff(ends) > 0).all() and ends.size == 11
    small = mdl_block_ends(50)
    assert small[0] == 1 and small[-1] == 50 and (np.diff(small) > 0).all()
