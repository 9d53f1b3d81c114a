"""End to end: with no data folders and no hub, the real CLI fails at once with one message naming every task.

lmms-eval exits 0 when an evaluation fails, so these tests read the log and the output
folder. The CLI is started through a small runner that first makes weight loading fail
loudly, so "no weights were loaded" is observed, not assumed; the runner then calls the
console script's own ``main``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.test_cli_e2e import _exe, _generation_task, _lmms_eval, _results

pytestmark = pytest.mark.e2e

REAL = ("probe_coco_entailment", "probe_coco_objects", "probe_coco_multilabel", "probe_snli_ve")
WEIGHTS_MARK = "WEIGHTS WERE LOADED"
# Same as the `lmms-eval` console script, after making HiddenStates._load_model announce itself.
RUNNER = f"""
import sys
from lmms_probe_tasks.models.hidden_states import HiddenStates
def _load_model(self):
    print({WEIGHTS_MARK!r}, flush=True)
    raise SystemExit(3)
HiddenStates._load_model = _load_model
from lmms_eval.cli.dispatch import main
sys.argv[0] = "lmms-eval"
sys.exit(main())
"""


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    from lmms_probe_tasks.tiny import build_tiny

    return build_tiny("llava", tmp_path_factory.mktemp("ckpt") / "tiny-llava")


def _run(args: list[str], cwd: Path, launcher: list[str] | None = None) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for name in ("PYTHONPATH", "LMMS_PROBE_COCO_DIR", "LMMS_PROBE_SNLI_VE_DIR"):
        env.pop(name, None)
    runner = cwd / "runner.py"
    runner.write_text(RUNNER)
    cmd = (launcher or [sys.executable]) + [str(runner)] + args
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return proc.stdout + proc.stderr


def _stamp(log: str, marker: str) -> datetime:
    line = next(line for line in log.splitlines() if marker in line)
    return datetime.strptime(re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", line).group(0), "%Y-%m-%d %H:%M:%S")


def _check_one_message(log: str, out: Path) -> str:
    assert WEIGHTS_MARK not in log
    errors = [line for line in log.splitlines() if "Error during evaluation" in line]
    assert errors, f"no evaluation error; lmms-eval said:\n{log[-4000:]}"
    message = log[log.index("Error during evaluation") :]
    assert "the data of 4 selected probe tasks cannot be read" in message
    for task in REAL:
        assert task in message
    assert "LMMS_PROBE_COCO_DIR" in message and "LMMS_PROBE_SNLI_VE_DIR" in message
    assert "annotations/instances_train2017.json" in message and "flickr30k_images/" in message
    assert "offline mode is on (HF_HUB_OFFLINE=1)" in message
    assert "Retrying" not in log and "hidden_states:" not in log  # no hub retries, no extraction
    assert not list(out.glob("**/*_results.json"))
    return message


def test_no_data_and_offline_fails_fast_with_one_message(tiny_llava, tmp_path):
    args = ["--model", "hidden_states", "--model_args", f"pretrained={tiny_llava}", "--tasks", "probe_*"]
    start = time.monotonic()
    log = _run(args + ["--output_path", "out"], tmp_path)
    seconds = time.monotonic() - start
    _check_one_message(log, tmp_path / "out")
    assert log.count("Error during evaluation") == 1  # one error, not one per task
    # The evaluation part (its first log line to the error) is the data check: no hub retries.
    assert (_stamp(log, "Error during evaluation") - _stamp(log, "simple_evaluate")).total_seconds() <= 10
    assert seconds < 120  # the rest is lmms-eval indexing its ~2,000 built-in task YAMLs


def test_torchrun_every_rank_reports_it_and_none_waits(tiny_llava, tmp_path):
    args = ["--model", "hidden_states", "--model_args", f"pretrained={tiny_llava}", "--tasks", "probe_*"]
    launcher = [_exe("torchrun"), "--nproc_per_node", "2", "--master_port", "29541"]
    log = _run(args + ["--output_path", "out"], tmp_path, launcher=launcher)
    _check_one_message(log, tmp_path / "out")
    assert log.count("Error during evaluation: the data of 4 selected probe tasks") == 2  # both ranks
    assert "Connection closed by peer" not in log  # no rank left in lmms-eval's rank-0-first barrier


def test_tasks_without_external_data_still_run_beside_a_generation_task(tiny_llava, tmp_path):

    gen = _generation_task(tmp_path / "gen_tasks", ["red", "red"], max_new_tokens=2)
    log = _lmms_eval(
        [
            "--model",
            "hidden_states",
            "--model_args",
            f"pretrained={tiny_llava}",
            "--tasks",
            "probe_shapes_*,gen_*",
            "--include_path",
            str(gen),
            "--limit",
            "60",
            "--gen_kwargs",
            "probe_preset=fast",
            "--output_path",
            "out",
        ],
        cwd=tmp_path,
        env={"LMMS_PROBE_COCO_DIR": "", "LMMS_PROBE_SNLI_VE_DIR": ""},
    )
    results = _results(tmp_path / "out", log)
    assert set(results) == {"probe_shapes_entailment", "probe_shapes_objects", "gen_fixture"}
    assert "cannot be read" not in log
