"""Report: a probe task's per-layer results as files (JSON, CSV, plots), merged with related runs.

:mod:`~lmms_probe_tasks.report.artifacts` writes the JSON and CSV, merges the
random-init and blind counterparts, records provenance and redraws everything from the JSON;
:mod:`~lmms_probe_tasks.report.figures` describes a task's plot as plain data and
:mod:`~lmms_probe_tasks.report.comparison` the figure of a whole output folder;
:mod:`~lmms_probe_tasks.report.plots` draws them. ``python -m lmms_probe_tasks.report OUT_DIR``
redraws an output folder's figures without a model.
"""

from __future__ import annotations

from lmms_probe_tasks.report.artifacts import (
    BLIND_SUFFIX,
    RANDOM_INIT_SUFFIX,
    ProbeReport,
    find_probes_root,
    load_task_figure,
    redraw,
    refresh_folder,
    run_folder_name,
    sanitize,
    versions,
    write_report,
)
from lmms_probe_tasks.report.comparison import COMPARISON_FILE, Run, comparison_figure, load_runs, write_comparison
from lmms_probe_tasks.report.figures import Curve, FigureSpec, Panel, task_figure
from lmms_probe_tasks.report.plots import plot_task, render, save

__all__ = [
    "BLIND_SUFFIX",
    "COMPARISON_FILE",
    "RANDOM_INIT_SUFFIX",
    "Curve",
    "FigureSpec",
    "Panel",
    "ProbeReport",
    "Run",
    "comparison_figure",
    "find_probes_root",
    "load_runs",
    "load_task_figure",
    "plot_task",
    "redraw",
    "refresh_folder",
    "render",
    "run_folder_name",
    "sanitize",
    "save",
    "task_figure",
    "versions",
    "write_comparison",
    "write_report",
]
