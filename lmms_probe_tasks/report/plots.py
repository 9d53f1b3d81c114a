"""Draws figure specs (:mod:`lmms_probe_tasks.report.figures`) with matplotlib and writes them as PNG files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lmms_probe_tasks.report.figures import Curve, FigureSpec, Panel, task_figure
from lmms_probe_tasks.report.stacks import Stack


def _pyplot() -> Any:
    """Matplotlib's pyplot on the headless Agg backend (never needs a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _segments(curve: Curve, stacks: tuple[Stack, ...]) -> list[list[int]]:
    """The point indices of each line segment of a curve: one per stack it has points in (all, without stacks)."""
    if not stacks:
        return [list(range(len(curve.x)))]
    groups = [[i for i, x in enumerate(curve.x) if stack.holds(x)] for stack in stacks]
    return [group for group in groups if group]


def _draw(ax: Any, panel: Panel) -> None:
    """Draw one panel's curves, bands, labels and (for layer indices) the relative-depth axis.

    On a whole-model axis (``panel.stacks``) each curve is one line segment per stack (no line
    joins the last vision layer to the projector: they are different spaces), with a dashed
    separator between stacks and each stack's label above its span.
    """
    from matplotlib.ticker import MaxNLocator

    for curve in panel.curves:
        if curve.role == "chance":
            ax.axhline(curve.y[0], color=curve.color, linewidth=0.9, alpha=0.6, label=curve.label)
            continue
        for n, part in enumerate(_segments(curve, panel.stacks)):
            xs = [curve.x[i] for i in part]
            ax.plot(
                xs,
                [curve.y[i] for i in part],
                linestyle=curve.linestyle,
                marker=curve.marker,
                markersize=5 if curve.hollow else 3.5,
                markerfacecolor="none" if curve.hollow else curve.color,
                linewidth=1.2 if curve.hollow else 1.6,
                color=curve.color,
                label=curve.label if n == 0 else None,  # one legend entry per curve
            )
            if curve.band is not None:
                low, high = ([band[i] for i in part] for band in curve.band)
                if len(part) == 1 and panel.stacks:  # a one-row stack (the projector): a band has no width
                    y = curve.y[part[0]]
                    spread = [[y - low[0]], [high[0] - y]]
                    ax.errorbar(xs, [y], spread, fmt="none", color=curve.color, alpha=0.4, capsize=3)
                else:
                    ax.fill_between(xs, low, high, color=curve.color, alpha=0.15, linewidth=0)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.grid(alpha=0.3)
    if panel.ticks:
        positions, labels = zip(*panel.ticks)
        # Upright while about 2.5 row names per inch of axes fit; turned when they would collide.
        inches = ax.get_position().width * ax.figure.get_figwidth()
        ax.set_xticks(positions, labels, fontsize=7, rotation=90 if len(panel.ticks) > 2.5 * inches else 0)
        ax.grid(False, axis="x")
    for left, right in zip(panel.stacks, panel.stacks[1:]):
        ax.axvline((left.end + right.start) / 2, color="grey", linestyle="--", linewidth=0.8, alpha=0.7)
    if panel.stacks:
        low, high = panel.stacks[0].start, panel.stacks[-1].end
        pad = max(0.04 * (high - low), 0.05)  # a one-row stack keeps its marker inside the axes
        ax.set_xlim(low - pad, high + pad)
        for stack in panel.stacks:
            where = ax.get_xaxis_transform()  # x in data, y in axes fraction: just above the axes
            ax.text(stack.center, 1.01, stack.label, transform=where, ha="center", va="bottom", fontsize=8)
    if panel.depth_of:
        depth = panel.depth_of
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        top = ax.secondary_xaxis("top", functions=(lambda x: x / depth, lambda d: d * depth))
        top.set_xlabel(f"relative depth (layer / L, L = {depth})", fontsize=8)
    if panel.note:
        ax.annotate(
            panel.note,
            xy=(0.5, 0.0),
            xycoords=ax.xaxis.label,  # under the x label, wherever the tick labels put it
            xytext=(0, -4),
            textcoords="offset points",
            ha="center",
            va="top",
            fontsize=6.5,
            color="dimgrey",
        )


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
    if single and spec.panels and spec.panels[0].stacks:
        # A whole-model axis: wider with the number of rows, so row names and stack labels stay legible.
        stacks = spec.panels[0].stacks
        size = (min(14.0, max(7.0, 3.0 + 0.16 * (stacks[-1].end - stacks[0].start))), 4.6)
    fig, axes = plt.subplots(spec.n_rows, spec.n_cols, squeeze=False, figsize=size, dpi=120, layout="constrained")
    used = set()
    for panel in spec.panels:
        ax = axes[panel.row][panel.col]
        _draw(ax, panel)
        heading = spec.column_titles[panel.col] if panel.row == 0 and spec.column_titles else ""
        # Room above the axes for the stack labels of a whole-model axis.
        pad = 14.0 if panel.stacks else 6.0
        ax.set_title(f"{heading.upper()}\n{panel.title}" if heading else panel.title, fontsize=9, pad=pad)
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
