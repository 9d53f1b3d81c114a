"""Smoke test of the ``sites`` workload of ``benchmarks/extraction.py`` on the plain tiny LLaVA (seconds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "extraction.py"


def test_sites_workload_in_help() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--help"], capture_output=True, text=True, check=True).stdout
    assert "sites" in out and "--sites-docs" in out and "sites=[vision,projector,language]" in out


def test_sites_child_times_every_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmms_probe_tasks.tiny import build_tiny

    sys.path.insert(0, str(BENCH.parent))
    try:
        import extraction
    finally:
        sys.path.remove(str(BENCH.parent))
    path = build_tiny("llava", tmp_path / "tiny-llava")
    extraction._sites_child(str(path), batch=2, repeats=1, n_docs=3, threads=1)
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["sites"] == {"all": ["language", "projector", "vision"], "language": ["language"], "vision": ["vision"]}
    assert set(res["cpu"]) == set(res["wall"]) == {"all", "language", "vision", "tower", "full", "processor"}
    assert all(seconds > 0 for seconds in res["cpu"].values())
    # One forward pass serves every site: its rows are those of the single-site runs.
    assert res["diff_language"] < 1e-6 and res["diff_vision"] < 1e-6
    assert res["docs"] == 3 and res["vision_layers"] == 2
