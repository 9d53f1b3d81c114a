"""The wheel ships the task YAMLs (a non-editable install must find them from any folder)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contains_task_yamls_and_entry_point(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("lmms_probe_tasks-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    yamls = {p.name for p in (ROOT / "task_yamls").iterdir() if p.is_file()}
    shipped = {Path(n).name for n in names if n.startswith("lmms_probe_tasks/task_yamls/")}
    assert yamls <= shipped, f"missing from the wheel: {sorted(yamls - shipped)}"
    assert "lmms_probe_tasks/py.typed" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[lmms_eval.models]" in text and "hidden_states = lmms_probe_tasks.registry:model_manifests" in text
