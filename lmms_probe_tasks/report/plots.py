"""Draws figure specs (:mod:`lmms_probe_tasks.report.figures`) with matplotlib and writes them as PNG files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lmms_probe_tasks.report.figures import FigureSpec, Panel, task_figure


def _pyplot() -> Any:
    """Matplotlib's pyplot on the headless Agg backend (never needs a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw(ax: Any, panel: Panel) -> None:
    """Draw one panel's curves, bands, labels and (for layer indices) the relative-depth axis."""
    from matplotlib.ticker import MaxNLocator

    for curve in panel.curves:
        if curve.role == "chance":
            ax.axhline(curve.y[0], color=curve.color, linewidth=0.9, alpha=0.6, label=curve.label)
            continue
        ax.plot(
            curve.x,
            curve.y,
            linestyle=curve.linestyle,
            marker=curve.marker,
            markersize=5 if curve.hollow else 3.5,
            markerfacecolor="none" if curve.hollow else curve.color,
            linewidth=1.2 if curve.hollow else 1.6,
            color=curve.color,
            label=curve.label,
        )
        if curve.band is not None:
            ax.fill_between(curve.x, *curve.band, color=curve.color, alpha=0.15, linewidth=0)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.grid(alpha=0.3)
    if panel.depth_of:
        depth = panel.depth_of
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        top = ax.secondary_xaxis("top", functions=(lambda x: x / depth, lambda d: d * depth))
        top.set_xlabel(f"relative depth (layer / L, L = {depth})", fontsize=8)


def render(spec: FigureSpec) -> Any:
    """Build the matplotlib figure of a spec (not written anywhere; close it when done).

    Args:
        spec: What to draw.

    Returns:
        The ``matplotlib.figure.Figure``: one axes per panel (empty grid cells removed), with
        one legend per panel or, for ``shared_legend``, one for the figure.
    """
    plt = _pyplot()
    single = spec.n_rows == spec.n_cols == 1
    size = (7.0, 4.2) if single else (4.8 * spec.n_cols, 3.1 * spec.n_rows + 1.0)
    fig, axes = plt.subplots(spec.n_rows, spec.n_cols, squeeze=False, figsize=size, dpi=120, layout="constrained")
    used = set()
    for panel in spec.panels:
        ax = axes[panel.row][panel.col]
        _draw(ax, panel)
        heading = spec.column_titles[panel.col] if panel.row == 0 and spec.column_titles else ""
        ax.set_title(f"{heading.upper()}\n{panel.title}" if heading else panel.title, fontsize=9)
        if not spec.shared_legend:
            ax.legend(fontsize=7, loc="best")
        used.add((panel.row, panel.col))
    for row in range(spec.n_rows):
        for col in range(spec.n_cols):
            if (row, col) not in used:
                axes[row][col].remove()
    if spec.shared_legend:
        entries: dict[str, Any] = {}
        for ax in fig.axes:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                entries.setdefault(label, handle)
        fig.legend(entries.values(), entries.keys(), loc="outside lower center", ncol=min(3, len(entries)), fontsize=8)
    fig.suptitle(spec.title, fontsize=10)
    return fig


def save(spec: FigureSpec, path: str | os.PathLike) -> Path:
    """Render a spec and write it as a PNG (via a temporary file, so a reader never sees half a file).

    Args:
        spec: What to draw.
        path: The PNG to write.

    Returns:
        The written path.
    """
    path = Path(path)
    fig = render(spec)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        _pyplot().close(fig)
        tmp.unlink(missing_ok=True)
    return path


def plot_task(data: dict, others: dict[str, dict], path: str | os.PathLike) -> Path:
    """Write a task's plot (:func:`~lmms_probe_tasks.report.figures.task_figure`) as a PNG.

    Args:
        data: The task's report JSON (:meth:`~lmms_probe_tasks.report.ProbeReport.to_dict`).
        others: Counterpart runs' reports by name (``random_init``, ``blind_blank``, ...).
        path: The PNG to write.

    Returns:
        The written path.
    """
    return save(task_figure(data, others), path)
