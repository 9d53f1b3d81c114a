"""The probe core: pure functions on arrays that fit and score one probe per layer (no model, no harness).

Data flow: ``inputs`` checks the arrays and puts probe-train first, ``targets``
encodes the labels, ``features`` reads and standardises a few layers at a time,
``controls`` draws dev splits and control labels, ``selection`` chooses C on dev with
the batched logistic regression of ``logreg`` (solved by ``solver``) or ``mlp``
trains the MLP probe, ``metrics`` and ``bootstrap`` score the test predictions,
``mdl`` measures the online codelength, and ``protocol`` sequences it all into a
``result``. ``config`` holds the settings, ``baselines`` the model-free text-only
score.
"""

from __future__ import annotations

from lmms_probe_tasks.probe.baselines import text_only_score
from lmms_probe_tasks.probe.config import FAST_C_GRID, MDL_FRACTIONS, PAPER_C_GRID, PRESETS, ProtocolConfig
from lmms_probe_tasks.probe.mlp import MLPConfig
from lmms_probe_tasks.probe.protocol import run_protocol
from lmms_probe_tasks.probe.result import ProtocolResult
from lmms_probe_tasks.probe.targets import TARGET_KINDS, TargetKind, multi_hot, unusable_reason

__all__ = [
    "FAST_C_GRID",
    "MDL_FRACTIONS",
    "PAPER_C_GRID",
    "PRESETS",
    "TARGET_KINDS",
    "MLPConfig",
    "ProtocolConfig",
    "ProtocolResult",
    "TargetKind",
    "multi_hot",
    "run_protocol",
    "text_only_score",
    "unusable_reason",
]
