"""Draws a probe task's per-layer curves and the global-vs-local paper figure as PNG files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def _series(data: dict, key: str, x: str = "layer") -> tuple[list[float], list[float]]:
    """The x values and one column of a report's layer rows (missing values as NaN)."""
    pairs = [(row[x], row.get(key)) for row in data["layers"]]
    return [p[0] for p in pairs], [math.nan if p[1] is None else p[1] for p in pairs]


def _pyplot() -> Any:
    """Matplotlib's pyplot on the headless Agg backend (never needs a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _band(ax: Any, data: dict, x: str, alpha: float, label: str | None = None) -> None:
    """Shade the bootstrap CI of a report's curve, when it has one."""
    xs, low = _series(data, "ci_low", x)
    _, high = _series(data, "ci_high", x)
    if not all(math.isnan(v) for v in low):
        ax.fill_between(xs, low, high, alpha=alpha, label=label)


def plot_task(data: dict, others: dict[str, dict], path: Path) -> None:
    """Plot a task's score against layer index and relative depth, with CI band and control curves.

    Args:
        data: The task's report JSON (:meth:`~lmms_probe_tasks.report.ProbeReport.to_dict`).
        others: Counterpart runs' reports by name (``random_init``, ``blind_blank``, ...).
        path: The PNG to write.
    """
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()

    metric = data["metric"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=120)
    for ax, x in zip(axes, ("layer", "relative_depth")):
        xs, ys = _series(data, metric, x)
        ax.plot(xs, ys, marker="o", markersize=3, label=metric)
        _band(ax, data, x, 0.2, "95% bootstrap CI")
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


def plot_paper_figure(reports: dict[str, dict], path: Path) -> None:
    """Plot the global (entailment) and local (object) tasks on relative depth, when both ran.

    Args:
        reports: Task name -> report JSON, for one run folder.
        path: The PNG to write (nothing is written unless both kinds are present).
    """
    kinds = {task: data.get("config", {}).get("semantics") for task, data in reports.items()}
    if not ({"global", "local"} <= set(kinds.values())):
        return
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=120)
    for task, data in sorted(reports.items()):
        if kinds[task] not in ("global", "local"):
            continue
        xs, ys = _series(data, data["metric"], "relative_depth")
        style = "-" if kinds[task] == "global" else "--"
        ax.plot(xs, ys, style, marker="o", markersize=3, label=f"{task} ({kinds[task]}, {data['metric']})")
        _band(ax, data, "relative_depth", 0.15)
    model = next(iter(reports.values())).get("config", {}).get("extraction", {}).get("model", "")
    ax.set_title(f"global vs local semantics across depth — {model}", fontsize=9)
    ax.set_xlabel("relative depth (layer / L)")
    ax.set_ylabel("probe score")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
