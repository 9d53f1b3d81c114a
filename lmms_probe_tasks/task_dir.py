"""Print the folder of the installed task YAMLs (the ``--include_path`` fallback)."""

from __future__ import annotations

from lmms_probe_tasks import TASK_DIR

if __name__ == "__main__":
    print(TASK_DIR)
