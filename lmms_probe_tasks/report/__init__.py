"""Report: a probe task's per-layer results as files (JSON, CSV, plots), merged with related runs.

:mod:`~lmms_probe_tasks.report.artifacts` writes the JSON and CSV, merges the
random-init and blind counterparts and records provenance;
:mod:`~lmms_probe_tasks.report.plots` draws the curves.
"""

from __future__ import annotations

from lmms_probe_tasks.report.artifacts import (
    BLIND_SUFFIX,
    RANDOM_INIT_SUFFIX,
    ProbeReport,
    refresh_folder,
    run_folder_name,
    sanitize,
    versions,
    write_report,
)

__all__ = [
    "BLIND_SUFFIX",
    "RANDOM_INIT_SUFFIX",
    "ProbeReport",
    "refresh_folder",
    "run_folder_name",
    "sanitize",
    "versions",
    "write_report",
]
