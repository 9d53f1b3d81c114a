"""Builds the one figure of a whole ``--output_path``: every run of every task on relative depth.

Every run folder under ``probes/`` (each model, its random-init twin, its blind runs) is one
curve in the panel of each task it ran; global tasks fill the left column and local tasks the
right one (``config.semantics``), as in Tao et al. (2024). Models keep one color across panels,
baselines one line style. It is written as ``probes/comparison.png``.

Where a run also probed the image-only sites (``sites=[vision,projector,language]``), their
rows go on the same axis before the decoder's [0, 1] (vision encoder at [-1, -0.3], projector
at -0.15: :data:`~lmms_probe_tasks.report.stacks.COMPARISON_SPANS`), the stacks separated and
labelled; named modules (``modules=``) have no depth to share and appear only in the per-task plot.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from lmms_probe_tasks.report.figures import Curve, FigureSpec, Panel, chance_curve, metric_name, variant_label
from lmms_probe_tasks.report.stacks import (
    comparison_axis,
    comparison_series,
    comparison_sites,
    empty_panel_note,
    has_values,
)

#: Columns of the comparison figure, left to right, by ``config.semantics``.
COLUMNS = (("global", "global semantics"), ("local", "local semantics"), (None, "semantics not declared"))
#: File name of the comparison figure, directly under ``probes/``.
COMPARISON_FILE = "comparison.png"

_VARIANT_STYLES = {"pretrained": ("-", "o"), "random_init": ("--", "s")}


@dataclass(frozen=True)
class Run:
    """One task's report from one run folder.

    Attributes:
        folder: The run folder's name under ``probes/``.
        model: The model id or path (``config.extraction.model``).
        variant: ``pretrained``, ``random_init``, ``blind_<mode>`` or both joined by ``+``.
        data: The report JSON.
    """

    folder: str
    model: str
    variant: str
    data: dict

    @property
    def task(self) -> str:
        """The task's name."""
        return str(self.data["task"])


def _variant(extraction: dict) -> str:
    parts = []
    if str(extraction.get("init", "pretrained")).startswith("random"):
        parts.append("random_init")
    if extraction.get("blind", "none") not in ("none", None):
        parts.append(f"blind_{extraction['blind']}")
    return "+".join(parts) or "pretrained"


def is_report(data: object) -> bool:
    """Whether loaded JSON is a probe task's report (``task``, ``metric`` and ``layers`` rows)."""
    return (
        isinstance(data, dict)
        and isinstance(data.get("task"), str)
        and isinstance(data.get("metric"), str)
        and isinstance(data.get("layers"), list)
    )


def load_runs(probes_root: str | os.PathLike) -> list[Run]:
    """Read every task report under ``probes_root`` (``<run folder>/<task>.json``).

    Files that are not reports (or not JSON) are skipped.

    Args:
        probes_root: ``<output_path>/probes``.

    Returns:
        The runs, by folder then task name.
    """
    runs = []
    for path in sorted(Path(probes_root).glob("*/*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if is_report(data):
            extraction = data.get("config", {}).get("extraction", {})
            model = str(extraction.get("model", path.parent.name))
            runs.append(Run(path.parent.name, model, _variant(extraction), data))
    return runs


def model_labels(models: list[str]) -> dict[str, str]:
    """Short legend names: a local path by its last folder (unless two would clash), a hub id as is.

    Args:
        models: Model ids or paths.

    Returns:
        Model -> its legend name.
    """
    short = {m: (Path(m.rstrip("/")).name or m) if m.startswith(("/", ".", "~")) else m for m in models}
    clashes = {s for s in short.values() if list(short.values()).count(s) > 1}
    return {m: (m if s in clashes else s) for m, s in short.items()}


def _variant_rank(variant: str) -> tuple[int, str]:
    return (0 if variant == "pretrained" else 1 if variant == "random_init" else 2, variant)


def _curve(run: Run, label: str, color: str) -> Curve:
    """A run's score against relative depth (image-only stacks first); pretrained runs keep their CI band."""
    metric = run.data["metric"]
    xs, ys = comparison_series(run.data, metric)
    band = None
    if run.variant == "pretrained":
        low, high = comparison_series(run.data, "ci_low")[1], comparison_series(run.data, "ci_high")[1]
        band = (low, high) if has_values(low) and has_values(high) else None
    linestyle, marker = _VARIANT_STYLES.get(run.variant, (":", "^"))
    if run.variant != "pretrained":
        label = f"{label} — {', '.join(variant_label(part) for part in run.variant.split('+'))}"
    role = "probe" if run.variant == "pretrained" else "random_init" if run.variant.startswith("random") else "blind"
    return Curve(label, role, xs, ys, band, color, linestyle, marker, hollow=run.variant != "pretrained")


def _panel(task: str, runs: list[Run], labels: dict[str, str], colors: dict[str, str], row: int, col: int) -> Panel:
    runs = sorted(runs, key=lambda r: (labels[r.model], _variant_rank(r.variant)))
    curves = [_curve(run, labels[run.model], colors[run.model]) for run in runs]
    reference = runs[0].data  # sorted: a pretrained run where there is one
    xs = tuple(x for curve in curves for x in curve.x)
    if (chance := chance_curve(reference, xs)) is not None:
        curves.append(chance)
    sites = {site for run in runs for site in comparison_sites(run.data)}
    # A run with scored image-only stacks: they go before the decoder, whose [0, 1] stays as it is.
    xlabel, stacks, ticks = comparison_axis(sites) if sites - {"language"} else ("relative depth (layer / L)", (), ())
    return Panel(
        title=task,
        xlabel=xlabel,
        ylabel=f"test {metric_name(reference['metric'])}",
        curves=tuple(curves),
        row=row,
        col=col,
        stacks=stacks,
        ticks=ticks,
        note=empty_panel_note([run.data for run in runs]),
    )


def comparison_figure(runs: list[Run]) -> FigureSpec | None:
    """Describe the comparison figure: one panel per task, global tasks left, local tasks right.

    Args:
        runs: :func:`load_runs` of one ``probes/`` folder.

    Returns:
        The figure's spec, or None when there is no run.
    """
    if not runs:
        return None
    labels = model_labels(sorted({run.model for run in runs}))
    colors = {model: f"C{i % 10}" for i, model in enumerate(sorted(labels, key=labels.get))}
    by_task: dict[str, list[Run]] = {}
    for run in runs:
        by_task.setdefault(run.task, []).append(run)
    semantics = {task: _semantics(task_runs) for task, task_runs in by_task.items()}
    columns = [(kind, title) for kind, title in COLUMNS if kind in semantics.values()]
    panels = [
        _panel(task, by_task[task], labels, colors, row, col)
        for col, (kind, _) in enumerate(columns)
        for row, task in enumerate(sorted(t for t, s in semantics.items() if s == kind))
    ]
    protocols = [run.data.get("config", {}).get("protocol", {}) for run in runs]
    probes = "/".join(sorted({str(p.get("probe") or "linear") for p in protocols}))
    levels = sorted({p["ci_level"] for p in protocols if isinstance(p.get("ci_level"), float)})
    band = "/".join(f"{level:.0%}" for level in levels) or "the"
    return FigureSpec(
        title=f"{probes} probes across relative depth (bands: {band} CI of the pretrained runs)",
        panels=tuple(panels),
        n_rows=max(panel.row for panel in panels) + 1,
        n_cols=len(columns),
        column_titles=tuple(title for _, title in columns),
        shared_legend=True,
    )


def _semantics(runs: list[Run]) -> str | None:
    """A task's ``config.semantics`` (``global``/``local``), None when no run declares a known one."""
    for run in runs:
        kind = run.data.get("config", {}).get("semantics")
        if kind in ("global", "local"):
            return kind
    return None


def write_comparison(probes_root: str | os.PathLike) -> Path | None:
    """Draw ``probes/comparison.png`` from every report under ``probes_root``.

    Args:
        probes_root: ``<output_path>/probes``.

    Returns:
        The written PNG, or None when there is no report.
    """
    from lmms_probe_tasks.report.plots import save

    spec = comparison_figure(load_runs(probes_root))
    if spec is None:
        return None
    path = Path(probes_root) / COMPARISON_FILE
    save(spec, path)
    return path
