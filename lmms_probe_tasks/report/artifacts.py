"""Writes a probe task's per-layer artifacts (JSON, CSV, provenance) and merges related runs' scores into them.

Related runs land in one ``--output_path``: ``probes/<model>/`` (the model),
``probes/<model>__init-random/`` (the random-init control) and ``probes/<model>__blind-<mode>/``
(the same prompts without the image). When a counterpart of a task exists, its curve is
added to the plot and its per-layer score to the CSV/JSON (``random_init_score``,
``blind_score``, ``image_gain``). When an entailment (global) and an object (local) task of the
same model are in one folder, ``paper_figure.png`` shows both on relative depth, as in
Tao et al. (2024). The plots themselves are drawn by :mod:`lmms_probe_tasks.report.plots`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmms_probe_tasks.report.plots import plot_paper_figure, plot_task

#: Folder-name suffixes of the control runs, by the extraction settings that make them.
RANDOM_INIT_SUFFIX = "__init-random"
BLIND_SUFFIX = "__blind-"


@dataclass(frozen=True)
class ProbeReport:
    """Everything one probe task produced in one run.

    Attributes:
        task: lmms-eval task name.
        metric: Primary metric name (``acc`` or ``map``).
        rows: One plain dict per layer: ``layer``, ``relative_depth``, the metric and the
            protocol's per-layer fields (CI, control, selectivity, MDL, ...).
        summary: ``best_layer``, ``best``, ``last`` and run-level numbers (baselines,
            best-layer bootstrap distribution).
        config: Probe, extraction and data settings and library versions.
    """

    task: str
    metric: str
    rows: list[dict]
    summary: dict[str, Any]
    config: dict

    @property
    def scores(self) -> dict[int, float]:
        """Layer -> primary score."""
        return {row["layer"]: row[self.metric] for row in self.rows}

    def to_dict(self) -> dict:
        """Return the report as JSON-ready data (NaN becomes null)."""
        return _json_safe(
            {
                "task": self.task,
                "metric": self.metric,
                "summary": self.summary,
                "layers": self.rows,
                "config": self.config,
            }
        )


def _json_safe(value: object) -> object:
    """Replace NaN/inf floats by None recursively (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def sanitize(name: str) -> str:
    """Make a model id or path usable as one folder name (as lmms-eval does: ``/`` -> ``__``)."""
    # Leading "./", "../" or "/" would make a hidden or odd folder name (./tiny -> .__tiny).
    return re.sub(r"^[./\\]+", "", name).rstrip("/").replace("/", "__").replace(os.sep, "__") or "model"


def run_folder_name(extraction: dict) -> str:
    """Folder of one run under ``probes/``: the model, plus a suffix for control runs."""
    name = sanitize(str(extraction.get("model", "model")))
    if str(extraction.get("init", "pretrained")).startswith("random"):
        name += RANDOM_INIT_SUFFIX
    if extraction.get("blind", "none") not in ("none", None):
        name += BLIND_SUFFIX + str(extraction["blind"])
    return name


def write_report(report: ProbeReport, probes_root: str | os.PathLike) -> dict[str, Path]:
    """Write ``<task>.json``, ``<task>.csv`` and ``<task>.png`` into the run's folder, then merge.

    Args:
        report: The results of one task.
        probes_root: ``<output_path>/probes``; the run's folder is created under it.

    Returns:
        Kind (``json``, ``csv``, ``png``, maybe ``paper``) -> written path.
    """
    root = Path(probes_root)
    folder = root / run_folder_name(report.config.get("extraction", {}))
    folder.mkdir(parents=True, exist_ok=True)
    paths = {kind: folder / f"{report.task}.{kind}" for kind in ("json", "csv", "png")}
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    refresh_folder(folder)
    for sibling in _related_folders(root, folder):
        refresh_folder(sibling)
    paper = folder / "paper_figure.png"
    if paper.exists():
        paths["paper"] = paper
    return paths


def _base_folder(folder: Path) -> str:
    return folder.name.split(RANDOM_INIT_SUFFIX)[0].split(BLIND_SUFFIX)[0]


def _related_folders(root: Path, folder: Path) -> list[Path]:
    base = _base_folder(folder)
    return [p for p in root.iterdir() if p.is_dir() and p != folder and _base_folder(p) == base]


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def refresh_folder(folder: Path) -> None:
    """Rewrite the CSVs and plots of every task JSON in ``folder`` with the counterparts present now."""
    root, base = folder.parent, _base_folder(folder)
    counterparts = {
        "random_init": root / (base + RANDOM_INIT_SUFFIX),
        **{f"blind_{p.name.split(BLIND_SUFFIX)[1]}": p for p in root.glob(base + BLIND_SUFFIX + "*") if p.is_dir()},
    }
    reports = {}
    for path in sorted(folder.glob("*.json")):
        data = _load(path)
        if not data or "layers" not in data:
            continue
        reports[data["task"]] = data
        others = {
            name: other
            for name, where in counterparts.items()
            if where != folder and (other := _load(where / path.name)) is not None
        }
        rows = _merged_rows(data, others)
        _write_csv(rows, folder / f"{data['task']}.csv")
        plot_task(data, others, folder / f"{data['task']}.png")
    plot_paper_figure(reports, folder / "paper_figure.png")


def _merged_rows(data: dict, others: dict[str, dict]) -> list[dict]:
    metric = data["metric"]
    rows = [dict(row) for row in data["layers"]]
    for name, other in others.items():
        theirs = {row["layer"]: row.get(metric) for row in other["layers"]}
        column = "random_init_score" if name == "random_init" else f"{name}_score"
        for row in rows:
            value = theirs.get(row["layer"])
            row[column] = value
            if name.startswith("blind") and value is not None and row.get(metric) is not None:
                # How much of this layer's score needs the image.
                row[f"image_gain_vs_{name}"] = row[metric] - value
    return rows


def _write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as handle:
        fieldnames = list(dict.fromkeys(key for row in rows for key in row))
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        # An empty cell, never "nan": a not-applicable control or an unscored layer has no number.
        writer.writerows(
            {k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()} for row in rows
        )


def versions() -> dict[str, str]:
    """Return the versions of the libraries that shape the numbers (recorded in every artifact).

    Returns:
        Distribution name (and ``python``) -> version, or ``not installed``.
    """
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for dist in ("lmms-probe-tasks", "lmms-eval", "transformers", "torch", "scikit-learn", "datasets"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out
