"""Writes a probe task's per-layer results as JSON, CSV and PNG plots, and merges related runs.

Related runs land in one ``--output_path``: ``probes/<model>/`` (the model),
``probes/<model>__init-random/`` (the random-init control) and ``probes/<model>__blind-<mode>/``
(the same prompts without the image). When a counterpart of a task exists, its curve is
added to the plot and its per-layer score to the CSV/JSON (``random_init_score``,
``blind_score``, ``image_gain``). When an entailment (global) and an object (local) task of the
same model are in one folder, ``paper_figure.png`` shows both on relative depth, as in
Tao et al. (2024).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        _plot_task(data, others, folder / f"{data['task']}.png")
    _plot_paper_figure(reports, folder / "paper_figure.png")


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
        writer.writerows(rows)


def _series(data: dict, key: str, x: str = "layer") -> tuple[list[float], list[float]]:
    pairs = [(row[x], row.get(key)) for row in data["layers"]]
    return [p[0] for p in pairs], [math.nan if p[1] is None else p[1] for p in pairs]


def _plot_task(data: dict, others: dict[str, dict], path: Path) -> None:
    """Score against layer index and against relative depth, with CI band and control curves."""
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    metric = data["metric"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=120)
    for ax, x in zip(axes, ("layer", "relative_depth")):
        xs, ys = _series(data, metric, x)
        ax.plot(xs, ys, marker="o", markersize=3, label=metric)
        _, low = _series(data, "ci_low", x)
        _, high = _series(data, "ci_high", x)
        if not all(math.isnan(v) for v in low):
            ax.fill_between(xs, low, high, alpha=0.2, label="95% bootstrap CI")
        _, control = _series(data, "control_score", x)
        if not all(math.isnan(v) for v in control):
            ax.plot(xs, control, linestyle="--", color="grey", label="control task")
        for name, other in others.items():
            oxs, oys = _series(other, metric, x)
            ax.plot(oxs, oys, linestyle=":", marker=".", label=name.replace("_", " "))
        majority = data.get("summary", {}).get("majority_baseline")
        if majority is not None:
            ax.axhline(majority, color="black", linewidth=0.8, alpha=0.5, label="majority class")
        ax.set_xlabel("layer (0 = embeddings)" if x == "layer" else "relative depth (layer / L)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if x == "layer":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize=7)
    model = data.get("config", {}).get("extraction", {}).get("model", "")
    fig.suptitle(f"{data['task']} — {model}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_paper_figure(reports: dict[str, dict], path: Path) -> None:
    """Global (entailment) and local (object) tasks on relative depth, when both ran."""
    kinds = {task: data.get("config", {}).get("semantics") for task, data in reports.items()}
    if not ({"global", "local"} <= set(kinds.values())):
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=120)
    for task, data in sorted(reports.items()):
        if kinds[task] not in ("global", "local"):
            continue
        xs, ys = _series(data, data["metric"], "relative_depth")
        style = "-" if kinds[task] == "global" else "--"
        ax.plot(xs, ys, style, marker="o", markersize=3, label=f"{task} ({kinds[task]}, {data['metric']})")
        _, low = _series(data, "ci_low", "relative_depth")
        _, high = _series(data, "ci_high", "relative_depth")
        if not all(math.isnan(v) for v in low):
            ax.fill_between(xs, low, high, alpha=0.15)
    model = next(iter(reports.values())).get("config", {}).get("extraction", {}).get("model", "")
    ax.set_title(f"global vs local semantics across depth — {model}", fontsize=9)
    ax.set_xlabel("relative depth (layer / L)")
    ax.set_ylabel("probe score")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
