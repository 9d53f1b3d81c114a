"""Describes a probe task's per-layer plot as plain data: panels, curves, labels (no matplotlib).

A :class:`FigureSpec` says what a figure shows; :mod:`lmms_probe_tasks.report.plots` draws it.
Keeping the two apart lets tests assert a figure's content (which curves, which labels, which
panels) from the artifacts without reading pixels. The comparison figure of a whole
``--output_path`` is built by :mod:`lmms_probe_tasks.report.comparison` from the same parts.

Where a run probed more than the decoder (``sites``: vision encoder, projector, named
modules), a task's plot becomes one *whole-model axis*: the stacks side by side in the order
the image flows through the model (vision encoder, projector, language decoder, then the named
modules), separated and labelled, so where object information enters is one picture. Rows
that are not applicable to the task (image-only features of a text-dependent target) are not
drawn; a note under the axis says which and why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lmms_probe_tasks.report.stacks import (
    Stack,
    _layout_note,
    _layout_xlabel,
    _number,
    has_values,
    not_applicable_note,
    placed_series,
    series,
    whole_model_layout,
)

#: What each kind of curve is, as the legend says it.
CONTROL_LABEL = "control task (Hewitt & Liang)"
RANDOM_INIT_LABEL = "random-init twin"
_BLIND_LABELS = {"blank": "blind: grey image", "noimage": "blind: no image"}
_METRIC_NAMES = {"acc": "acc", "map": "mAP"}


@dataclass(frozen=True)
class Curve:
    """One line of a panel.

    Attributes:
        label: Its legend entry: what the curve is.
        role: ``probe``, ``control``, ``random_init``, ``blind`` or ``chance``.
        x: Layer indices or relative depths (floats).
        y: Scores, NaN where a layer has none (drawn as a gap).
        band: ``(low, high)`` of the confidence interval per point, or None (no band).
        color: A matplotlib color (``C0``, ``grey``, ...).
        linestyle: A matplotlib line style.
        marker: A matplotlib marker, or None.
        hollow: Unfilled markers (baselines), so a baseline lying on the probe's curve leaves it visible.
    """

    label: str
    role: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    band: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    color: str | None = None
    linestyle: str = "-"
    marker: str | None = "o"
    hollow: bool = False


@dataclass(frozen=True)
class Panel:
    """One axes of a figure.

    Attributes:
        title: Shown above the panel.
        xlabel: The x-axis label.
        ylabel: The y-axis label.
        curves: The curves, in drawing (and legend) order.
        row: Grid row (0 = top).
        col: Grid column (0 = left).
        depth_of: When x is the layer index: the model's depth ``L``, to add a relative-depth
            axis (layer / L) on top; None for no such axis.
        stacks: On a whole-model axis: the stacks, left to right (curves are drawn one line
            segment per stack, with a separator between stacks); empty for a one-stack axis.
        ticks: ``(x, label)`` of each labelled x tick (row names on a whole-model axis);
            empty for matplotlib's own ticks.
        note: A caption under the axis (e.g. which rows are not applicable, and why); empty for none.
    """

    title: str
    xlabel: str
    ylabel: str
    curves: tuple[Curve, ...]
    row: int = 0
    col: int = 0
    depth_of: int | None = None
    stacks: tuple[Stack, ...] = ()
    ticks: tuple[tuple[float, str], ...] = ()
    note: str = ""

    @property
    def stack_labels(self) -> list[str]:
        """The stacks' labels, left to right."""
        return [stack.label for stack in self.stacks]

    @property
    def labels(self) -> list[str]:
        """The legend entries, in order."""
        return [curve.label for curve in self.curves]

    def curve(self, role: str) -> Curve | None:
        """Return the first curve of a role (``probe``, ``control``, ...), or None."""
        return next((curve for curve in self.curves if curve.role == role), None)


@dataclass(frozen=True)
class FigureSpec:
    """A whole figure: a grid of panels.

    Attributes:
        title: The figure's title.
        panels: The panels, each with its grid position.
        n_rows: Grid rows.
        n_cols: Grid columns.
        column_titles: One heading per column, or empty.
        shared_legend: One legend for the figure (True) instead of one per panel.
    """

    title: str
    panels: tuple[Panel, ...]
    n_rows: int = 1
    n_cols: int = 1
    column_titles: tuple[str, ...] = ()
    shared_legend: bool = False

    def panel(self, title: str) -> Panel:
        """Return the panel with this title.

        Raises:
            KeyError: No panel has it; the message lists the titles there are.
        """
        for panel in self.panels:
            if panel.title == title:
                return panel
        raise KeyError(f"no panel {title!r}; panels: {', '.join(p.title for p in self.panels)}")


def metric_name(metric: str) -> str:
    """The metric as readers write it (``acc``, ``mAP``)."""
    return _METRIC_NAMES.get(metric, metric)


def variant_label(name: str) -> str:
    """The legend text of a counterpart run: ``random_init`` -> ``random-init twin``, ``blind_blank`` -> ...

    Args:
        name: ``random_init`` or ``blind_<mode>``.

    Returns:
        What the run is, in words.
    """
    if name == "random_init":
        return RANDOM_INIT_LABEL
    mode = name.removeprefix("blind_")
    return _BLIND_LABELS.get(mode, f"blind: {mode}")


def chance_label(metric: str) -> str:
    """The legend text of the no-fit baseline of a metric."""
    return "chance (majority class)" if metric == "acc" else "chance (constant score)"


def probe_label(data: dict, with_band: bool) -> str:
    """The legend text of a probe's curve, e.g. ``probe (linear, test acc, 95% CI band)``.

    Args:
        data: The report JSON.
        with_band: Whether the curve has a CI band to mention.

    Returns:
        The label.
    """
    protocol = data.get("config", {}).get("protocol", {})
    rows = data.get("layers") or [{}]
    parts = [str(protocol.get("probe") or rows[0].get("probe") or "linear"), f"test {metric_name(data['metric'])}"]
    if with_band:
        level = protocol.get("ci_level", 0.95)
        parts.append(f"{level:.0%} CI band" if isinstance(level, float) else "CI band")
    return f"probe ({', '.join(parts)})"


def chance_curve(data: dict, xs: tuple[float, ...]) -> Curve | None:
    """The majority-class (constant-score) baseline as a flat curve over ``xs``, when the report has it."""
    majority = data.get("summary", {}).get("majority_baseline")
    if not isinstance(majority, (int, float)) or math.isnan(majority) or not xs:
        return None
    span = (min(xs), max(xs))
    return Curve(chance_label(data["metric"]), "chance", span, (float(majority),) * 2, color="black", marker=None)


def depth_of(data: dict) -> int | None:
    """The model's depth ``L`` (relative depth = layer / L), from the extraction settings or the rows."""
    n_layers = data.get("config", {}).get("extraction", {}).get("n_layers")
    if isinstance(n_layers, int) and n_layers > 0:
        return n_layers
    for row in data.get("layers") or []:
        if row.get("relative_depth"):
            return round(row["layer"] / row["relative_depth"])
    return None


def run_title(data: dict) -> str:
    """The run a report comes from: its model, plus ``random-init twin`` or the blind mode."""
    extraction = data.get("config", {}).get("extraction", {})
    model = str(extraction.get("model", "model"))
    if str(extraction.get("init", "pretrained")).startswith("random"):
        model += f" ({RANDOM_INIT_LABEL})"
    if extraction.get("blind", "none") not in ("none", None):
        model += f" ({variant_label('blind_' + str(extraction['blind']))})"
    return model


def task_figure(data: dict, others: dict[str, dict]) -> FigureSpec:
    """Describe a task's plot: one panel, score against layer index (relative depth on top).

    Curves: the probe with its CI band; the control task only where it applies (a non-null
    ``control_score``); each counterpart run (random-init twin, blind runs); the chance level.
    Where a site other than the decoder has a score (``sites=[vision,projector,language]``,
    ``modules=``), the x axis is the whole model instead (:func:`whole_model_layout`): each
    curve runs through the vision encoder's rows, the projector and the decoder's layers, one
    stack after the other, with the row names as ticks. Not-applicable rows are not drawn; the
    panel's note says which and why.

    Args:
        data: The task's report JSON.
        others: Counterpart runs' reports by name (``random_init``, ``blind_blank``, ...).

    Returns:
        The figure's spec (one panel).
    """
    layout = whole_model_layout(data)
    positions = layout[0] if layout is not None else {}

    def place(site: str, row: dict) -> float | None:
        return positions.get((site, int(_number(row.get("layer")))))

    def get(report: dict, key: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        # Today's axis (the decoder's layer index), or every site's rows at their whole-model x.
        return series(report, key) if layout is None else placed_series(report, key, place)

    metric = data["metric"]
    xs, ys = get(data, metric)
    band = (get(data, "ci_low")[1], get(data, "ci_high")[1])
    with_band = has_values(band[0]) and has_values(band[1])
    curves = [Curve(probe_label(data, with_band), "probe", xs, ys, band if with_band else None, "C0")]
    control = get(data, "control_score")[1]
    if has_values(control):
        curves.append(Curve(CONTROL_LABEL, "control", xs, control, color="grey", linestyle="--", marker="x"))
    styles = {"random_init": ("C1", "-.", "s")}
    for i, (name, other) in enumerate(sorted(others.items(), key=lambda item: (item[0] != "random_init", item[0]))):
        color, linestyle, marker = styles.get(name, (f"C{i + 2}", ":", "^"))
        role = "random_init" if name == "random_init" else "blind"
        curves.append(Curve(variant_label(name), role, *get(other, metric), None, color, linestyle, marker, True))
    if (chance := chance_curve(data, xs)) is not None:
        curves.append(chance)
    semantics = data.get("config", {}).get("semantics")
    title = f"{data['task']}" + (f" ({semantics} semantics)" if semantics else "")
    if layout is None:
        panel = Panel(
            title=title,
            xlabel="layer (0 = embeddings)",
            ylabel=f"test {metric_name(metric)}",
            curves=tuple(curves),
            depth_of=depth_of(data) if data.get("layers") else None,
            note=not_applicable_note(data),
        )
    else:
        _, stacks, ticks = layout
        panel = Panel(
            title=title,
            xlabel=_layout_xlabel(stacks),
            ylabel=f"test {metric_name(metric)}",
            curves=tuple(curves),
            stacks=stacks,
            ticks=ticks,
            note=_layout_note(data, stacks),
        )
    return FigureSpec(title=run_title(data), panels=(panel,))


