"""Layer-wise probing of multimodal LLMs inside lmms-eval.

Public surface: the package version and :data:`TASK_DIR`, the folder holding the
installed task YAMLs (pass it to ``--include_path`` if the automatic registration
ever fails: ``python -m lmms_probe_tasks.task_dir``).
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

#: Folder of the task YAMLs shipped inside the wheel (``task_yamls/`` in the source tree).
TASK_DIR: Path = Path(__file__).resolve().parent / "task_yamls"
if not TASK_DIR.is_dir():  # editable/source checkout: the folder sits beside the package
    TASK_DIR = Path(__file__).resolve().parent.parent / "task_yamls"

__all__ = ["TASK_DIR", "__version__"]
