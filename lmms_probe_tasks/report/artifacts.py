"""Writes a probe task's per-layer artifacts (JSON, CSV, provenance) and merges related runs' scores into them.

Related runs land in one ``--output_path``: ``probes/<model>/`` (the model),
``probes/<model>__init-random/`` (the random-init control) and ``probes/<model>__blind-<mode>/``
(the same prompts without the image). When a counterpart of a task exists, its curve is
added to the plot and its per-layer score to the CSV/JSON (``random_init_score``,
``blind_score``, ``image_gain``). After every task, ``probes/comparison.png`` redraws every run
of every task on relative depth, global tasks left and local tasks right, as in Tao et al.
(2024); :func:`redraw` rebuilds all plots from the JSON files alone
(``python -m lmms_probe_tasks.report OUT_DIR``). The figures are described by
:mod:`~lmms_probe_tasks.report.figures` and :mod:`~lmms_probe_tasks.report.comparison` and
drawn by :mod:`~lmms_probe_tasks.report.plots`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmms_probe_tasks.report.comparison import is_report, write_comparison
from lmms_probe_tasks.report.figures import FigureSpec, task_figure
from lmms_probe_tasks.report.plots import save

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
        site_rows: The rows of the other probed sites (``vision``, ``projector``, ``modules``),
            by site; each row has ``site``, ``row`` and ``layer`` (its index within the site).
    """

    task: str
    metric: str
    rows: list[dict]
    summary: dict[str, Any]
    config: dict
    site_rows: dict[str, list[dict]] = field(default_factory=dict)

    @property
    def scores(self) -> dict[int, float]:
        """Decoder layer -> primary score."""
        return {row["layer"]: row[self.metric] for row in self.rows}

    @property
    def site_scores(self) -> dict[tuple[str, int], float]:
        """``(site, index)`` -> primary score, for every site's rows."""
        out = {("language", row["layer"]): row[self.metric] for row in self.rows}
        for site, rows in self.site_rows.items():
            out.update({(site, row["layer"]): row[self.metric] for row in rows})
        return out

    def to_dict(self) -> dict:
        """Return the report as JSON-ready data (NaN becomes null)."""
        return _json_safe(
            {
                "task": self.task,
                "metric": self.metric,
                "summary": self.summary,
                "layers": self.rows,
                **({"sites": self.site_rows} if self.site_rows else {}),
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
    """Write ``<task>.json``, ``<task>.csv`` and ``<task>.png`` into the run's folder, merge, redraw the comparison.

    Args:
        report: The results of one task.
        probes_root: ``<output_path>/probes``; the run's folder is created under it.

    Returns:
        Kind (``json``, ``csv``, ``png``, ``comparison``) -> written path.
    """
    root = Path(probes_root)
    folder = root / run_folder_name(report.config.get("extraction", {}))
    folder.mkdir(parents=True, exist_ok=True)
    paths = {kind: folder / f"{report.task}.{kind}" for kind in ("json", "csv", "png")}
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    # Only this task's files change: its counterparts' CSVs and plots now merge it too.
    for run_folder in (folder, *_related_folders(root, folder)):
        refresh_folder(run_folder, report.task)
    comparison = write_comparison(root)
    if comparison is not None:
        paths["comparison"] = comparison
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


def _counterparts(folder: Path, name: str) -> dict[str, dict]:
    """The related runs' reports of one task (file ``name``) by counterpart name (``random_init``, ``blind_<mode>``)."""
    root, base = folder.parent, _base_folder(folder)
    where = {
        "random_init": root / (base + RANDOM_INIT_SUFFIX),
        **{f"blind_{p.name.split(BLIND_SUFFIX)[1]}": p for p in root.glob(base + BLIND_SUFFIX + "*") if p.is_dir()},
    }
    return {
        kind: other
        for kind, other_folder in where.items()
        if other_folder != folder and is_report(other := _load(other_folder / name))
    }


def load_task_figure(path: str | os.PathLike) -> FigureSpec:
    """Describe the plot of one ``<task>.json`` with the counterparts beside it now (what its PNG shows).

    Args:
        path: ``probes/<run folder>/<task>.json``.

    Returns:
        The spec :func:`refresh_folder` draws for it.

    Raises:
        ValueError: The file is not a probe task's report.
    """
    path = Path(path)
    data = _load(path)
    if not is_report(data):
        raise ValueError(f"{path} is not a probe task report (needs 'task', 'metric' and 'layers')")
    return task_figure(data, _counterparts(path.parent, path.name))


def refresh_folder(folder: Path, task: str | None = None) -> list[Path]:
    """Rewrite the CSVs and plots of every task JSON in ``folder`` with the counterparts present now.

    Args:
        folder: One run folder, ``probes/<model>[__init-random|__blind-<mode>]``.
        task: Only this task's files (None: every task's).

    Returns:
        The plots written, one per task report.
    """
    plots = []
    for path in [folder / f"{task}.json"] if task else sorted(folder.glob("*.json")):
        data = _load(path)
        if not is_report(data):
            continue
        others = _counterparts(folder, path.name)
        # Decoder rows (with their counterparts' scores), then the other sites' rows, one CSV.
        extra = [dict(row) for site_rows in (data.get("sites") or {}).values() for row in site_rows]
        _write_csv(_merged_rows(data, others) + extra, folder / f"{data['task']}.csv")
        plots.append(save(task_figure(data, others), folder / f"{data['task']}.png"))
    return plots


def find_probes_root(path: str | os.PathLike) -> Path:
    """Return the ``probes/`` folder of an ``--output_path``; the ``probes/`` folder or a run folder also do.

    Args:
        path: An lmms-eval ``--output_path``, its ``probes/`` folder, or one run folder in it.

    Returns:
        The folder that holds the run folders (``<run folder>/<task>.json``).

    Raises:
        FileNotFoundError: No probe report is there; the message names the folder and what was expected.
    """
    path = Path(path)

    def holds_reports(folder: Path, pattern: str) -> bool:
        return folder.is_dir() and any(is_report(_load(p)) for p in folder.glob(pattern))

    for candidate in (path / "probes", path):
        if holds_reports(candidate, "*/*.json"):
            return candidate
    if holds_reports(path, "*.json"):  # one run folder
        return path.parent
    raise FileNotFoundError(
        f"no probe report found in {path}: expected {path}/probes/<model>/<task>.json "
        "(written by a probe task run with --output_path). Fix: pass the --output_path of such a run, "
        "or its probes/ folder"
    )


def redraw(path: str | os.PathLike) -> dict[str, list[Path]]:
    """Rewrite every run folder's CSVs and plots and the comparison figure from the JSON reports alone.

    Args:
        path: An ``--output_path``, its ``probes/`` folder, or one run folder
            (see :func:`find_probes_root`).

    Returns:
        ``plots``: the per-task plots; ``comparison``: the comparison figure (one path).

    Raises:
        FileNotFoundError: No probe report is there.
    """
    root = find_probes_root(path)
    plots = [plot for folder in sorted(p for p in root.iterdir() if p.is_dir()) for plot in refresh_folder(folder)]
    comparison = write_comparison(root)
    return {"plots": plots, "comparison": [comparison] if comparison else []}


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
