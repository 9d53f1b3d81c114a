"""The feature cache through the real ``lmms-eval`` CLI: it keys on the weights, not on the folder's name."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli_e2e import _layer_rows, _lmms_eval, _results

pytestmark = pytest.mark.e2e

TASK, METRIC = "probe_shapes_objects", "map"


def _run(ckpt: Path, cwd: Path, out: str, extra: str = "") -> tuple[dict, str]:
    args = ["--model", "hidden_states", "--model_args", f"pretrained={ckpt}{extra}", "--batch_size", "4"]
    log = _lmms_eval(args + ["--tasks", TASK, "--limit", "60", "--output_path", out], cwd=cwd)
    return _layer_rows(_results(cwd / out, log)[TASK], METRIC), log


def _counts(log: str) -> tuple[int, int]:
    found = re.search(r"60 probe docs on this rank: (\d+) from the feature cache, (\d+) computed", log)
    assert found, log[-3000:]
    return int(found.group(1)), int(found.group(2))


def test_other_weights_in_the_same_folder_are_recomputed_and_unchanged_ones_are_not_loaded(tmp_path):
    ckpt, cache = tmp_path / "tiny", tmp_path / "cache"
    tiny = [sys.executable, "-m", "lmms_probe_tasks.tiny", "llava", str(ckpt)]
    subprocess.run(tiny, check=True, capture_output=True)
    with_cache = f",feature_cache={cache}"
    first, log = _run(ckpt, tmp_path, "first", with_cache)
    assert _counts(log) == (0, 60) and first

    subprocess.run(tiny + ["--seed", "1"], check=True, capture_output=True)  # other weights, same folder
    second, log = _run(ckpt, tmp_path, "second", with_cache)
    assert _counts(log) == (0, 60)
    reference, _ = _run(ckpt, tmp_path, "reference", ",feature_cache=none")
    assert second == reference

    third, log = _run(ckpt, tmp_path, "third", with_cache)  # nothing touched: all cached, no weights read
    assert _counts(log) == (60, 0) and third == second
    assert "Loading weights" not in log
    (report,) = (tmp_path / "third" / "probes").glob(f"*/{TASK}.json")
    weights = json.loads(report.read_text())["config"]["extraction"]["weights"]  # the fingerprint is recorded
    assert weights["source"] == "local" and weights["folder"] == str(ckpt.resolve()) and weights["files"] == 1
