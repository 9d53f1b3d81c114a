"""Where a report's rows go on an axis: per-layer series, site stacks, the whole-model axis.

A run that probed more than the decoder (vision encoder, projector, named modules) puts its
stacks side by side in the order the image flows through the model, separated and labelled
(:func:`whole_model_layout`); the comparison figure maps them onto one relative-depth axis
before the decoder (:data:`COMPARISON_SPANS`). Rows not applicable to a task are given no
position; :func:`not_applicable_note` says which and why. Plain data, no matplotlib
(:mod:`lmms_probe_tasks.report.figures` builds the specs from these).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

from lmms_probe_tasks.extract.taps import ROW_PREFIX, SITES


def series(data: dict, key: str, x: str = "layer") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Return the x values and one column of a report's layer rows (missing values as NaN).

    Args:
        data: A report JSON (:meth:`~lmms_probe_tasks.report.ProbeReport.to_dict`).
        key: The column (``acc``, ``ci_low``, ``control_score``, ...).
        x: ``layer`` or ``relative_depth``.

    Returns:
        ``(xs, ys)``, float tuples of one entry per layer row.
    """
    rows = data.get("layers") or []
    xs = tuple(_number(row.get(x)) for row in rows)
    return xs, tuple(_number(row.get(key)) for row in rows)


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def has_values(values: tuple[float, ...]) -> bool:
    """Whether any value is a number (not NaN): a column that applies."""
    return any(not math.isnan(v) for v in values)


#: The sites of a whole-model axis, in the order the image's information flows through the model;
#: ``modules`` (any named modules, from either stream) come last, in ``named_modules()`` order.
SITE_ORDER = SITES


#: What each stack is, as its label on a whole-model axis says it.
STACK_LABELS = {
    "vision": "vision encoder",
    "projector": "projector",
    "language": "language decoder",
    "modules": "named modules",
}


#: Row-name prefix per site, for reports whose rows carry no ``row`` (older reports: decoder only).
_ROW_PREFIX = ROW_PREFIX


#: Empty x units between two stacks of a task's plot: room for the separator and the stack labels.
STACK_GAP = 1.5


#: At most about this many row-name ticks on a task's plot (deep models would make them unreadable).
MAX_TICKS = 24


#: Where the comparison figure puts each stack on its relative-depth axis: x at relative depth 0 and 1.
#: The decoder keeps today's [0, 1]; the image-only stacks come before it, so the whole pipeline
#: reads left to right. Named modules have no depth to share, so the comparison leaves them out.
COMPARISON_SPANS = {"vision": (-1.0, -0.3), "projector": (-0.15, -0.15), "language": (0.0, 1.0)}


@dataclass(frozen=True)
class Stack:
    """One stack of a whole-model axis: one site's rows side by side.

    Attributes:
        site: ``vision``, ``projector``, ``language`` or ``modules``.
        label: Shown above its span (``vision encoder``, ...).
        start: x of its first row.
        end: x of its last row (``start`` for a one-row stack such as the projector).
    """

    site: str
    label: str
    start: float
    end: float

    @property
    def center(self) -> float:
        """Where its label goes."""
        return (self.start + self.end) / 2

    def holds(self, x: float) -> bool:
        """Whether ``x`` lies in this stack's span."""
        return self.start <= x <= self.end


def site_rows(data: dict) -> dict[str, list[dict]]:
    """Every probed site's rows of a report, in :data:`SITE_ORDER` (sites without rows left out).

    Args:
        data: A report JSON: the decoder's rows under ``layers``, the other sites' under ``sites``.

    Returns:
        Site -> its rows (``language``: the ``layers`` rows); unknown sites after the known ones.
    """
    others = data.get("sites") or {}
    out = {}
    for site in (*SITE_ORDER, *sorted(set(others) - set(SITE_ORDER))):
        rows = (data.get("layers") or []) if site == "language" else (others.get(site) or [])
        if rows:
            out[site] = list(rows)
    return out


def is_not_applicable(row: dict, metric: str) -> bool:
    """Whether a row has no score because it does not apply to the task (never drawn)."""
    return math.isnan(_number(row.get(metric))) and str(row.get("reason") or "").startswith("not applicable")


def row_label(site: str, row: dict) -> str:
    """A row's name as lmms-eval's table has it without the metric (``v03``, ``proj``, ``l07``, ``m02``)."""
    name = row.get("row")
    if isinstance(name, str) and name:
        return name
    prefix = _ROW_PREFIX.get(site, site[:1])
    return prefix if site == "projector" else f"{prefix}{int(_number(row.get('layer'))):02d}"


def placed_series(
    data: dict, key: str, place: Callable[[str, dict], float | None]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Return one column of every site's rows at the x positions ``place`` gives them, in x order.

    Args:
        data: A report JSON.
        key: The column (``acc``, ``ci_low``, ...); missing values as NaN.
        place: ``(site, row)`` -> the row's x, or None to leave the row out.

    Returns:
        ``(xs, ys)``, float tuples sorted by x.
    """
    points = [
        (x, _number(row.get(key)))
        for site, rows in site_rows(data).items()
        for row in rows
        if (x := place(site, row)) is not None
    ]
    points.sort(key=lambda point: point[0])
    return tuple(x for x, _ in points), tuple(y for _, y in points)


def scored_sites(data: dict) -> list[str]:
    """The sites other than the decoder with at least one score: those a whole-model axis shows."""
    metric = data["metric"]
    return [
        site
        for site, rows in site_rows(data).items()
        if site != "language" and has_values(tuple(_number(row.get(metric)) for row in rows))
    ]


def not_applicable_note(data: dict) -> str:
    """The caption naming the rows that are not drawn because they do not apply, and why ("" when none).

    Args:
        data: A report JSON.

    Returns:
        E.g. ``vision (3 rows), projector (1 row) not applicable, not drawn: their features see
        only the image, and ...'s target depends on the text too (...)``.
    """
    metric = data["metric"]
    by_reason: dict[str, dict[str, int]] = {}
    for site, rows in site_rows(data).items():
        for row in rows:
            if is_not_applicable(row, metric):
                # One sentence for every site a reason names only by its site's name.
                why = str(row["reason"]).removeprefix("not applicable").lstrip(": ")
                why = why.replace(f"{site} features", "their features")
                counts = by_reason.setdefault(why, {})
                counts[site] = counts.get(site, 0) + 1
    parts = []
    for why, counts in by_reason.items():
        sites = ", ".join(f"{site} ({n} row{'s' if n > 1 else ''})" for site, n in counts.items())
        parts.append(f"{sites} not applicable, not drawn" + (f": {why}" if why else ""))
    return "\n".join(textwrap.fill(part, 130) for part in parts)


def whole_model_layout(
    data: dict,
) -> tuple[dict[tuple[str, int], float], tuple[Stack, ...], tuple[tuple[float, str], ...]] | None:
    """The whole-model x axis of a task's plot, or None where only the decoder has scores (today's axis).

    The stacks follow :data:`SITE_ORDER`: the vision encoder's rows, the projector, the
    decoder's layers (all of them, unscored ones as gaps, as today), the named modules; one
    x unit per row and :data:`STACK_GAP` units between stacks. A site whose every row is not
    applicable gets no stack; a not-applicable row of a drawn stack (a vision-stream module on
    a text-dependent task) gets no position.

    Args:
        data: The task's report JSON.

    Returns:
        ``(positions, stacks, ticks)``: ``(site, row index) -> x``; the stacks left to right;
        the ``(x, row name)`` ticks, at most about :data:`MAX_TICKS` (each stack's first and
        last row always).
    """
    shown = set(scored_sites(data))
    if not shown:
        return None
    metric = data["metric"]
    positions: dict[tuple[str, int], float] = {}
    stacks: list[Stack] = []
    names: list[list[tuple[float, str]]] = []
    cursor = 0.0
    for site, rows in site_rows(data).items():
        if site != "language" and site not in shown:
            continue
        kept = [row for row in rows if site == "language" or not is_not_applicable(row, metric)]
        kept.sort(key=lambda row: _number(row.get("layer")))
        placed = []
        for i, row in enumerate(kept):
            positions[(site, int(_number(row.get("layer"))))] = cursor + i
            placed.append((cursor + i, row_label(site, row)))
        stacks.append(Stack(site, STACK_LABELS.get(site, site), cursor, cursor + len(kept) - 1))
        names.append(placed)
        cursor += len(kept) - 1 + 1 + STACK_GAP
    step = max(1, math.ceil(sum(len(placed) for placed in names) / MAX_TICKS))
    ticks = []
    for placed in names:
        chosen = placed[::step]
        if chosen[-1] != placed[-1]:
            # The last row always has its name; its thinned neighbour goes if the two would touch.
            if len(chosen) > 1 and placed[-1][0] - chosen[-1][0] < step / 2:
                chosen.pop()
            chosen.append(placed[-1])
        ticks.extend(chosen)
    return positions, tuple(stacks), tuple(ticks)


_ROW_WORDS = {"vision": "v = vision layer", "projector": "proj = projector", "language": "l = decoder layer",
              "modules": "m = module"}  # fmt: skip


def _layout_xlabel(stacks: tuple[Stack, ...]) -> str:
    """The whole-model axis' label: what the row-name ticks of its stacks mean."""
    words = ", ".join(_ROW_WORDS.get(stack.site, stack.site) for stack in stacks)
    embeddings = [f"{_ROW_PREFIX[s.site]}00" for s in stacks if s.site in ("vision", "language")]
    return f"row ({words}" + (f"; {', '.join(embeddings)} = embeddings)" if embeddings else ")")


def _layout_note(data: dict, stacks: tuple[Stack, ...]) -> str:
    """The whole-model axis' caption: not-applicable rows, and the module names behind the ``m`` rows."""
    lines = [note] if (note := not_applicable_note(data)) else []
    if any(stack.site == "modules" for stack in stacks):
        metric = data["metric"]
        rows = [row for row in site_rows(data).get("modules", []) if not is_not_applicable(row, metric)]
        if len(rows) <= 8:
            names = ", ".join(f"{row_label('modules', row)}={row.get('module', '?')}" for row in rows)
        else:  # too many to list legibly: the CSV and JSON name every one
            names = "m rows: the module column of the task's CSV/JSON names each"
        lines.append(textwrap.fill(names, 130))
    return "\n".join(lines)


def comparison_x(site: str, row: dict, metric: str) -> float | None:
    """A row's x on the comparison figure's axis (:data:`COMPARISON_SPANS`), or None when not drawn.

    Args:
        site: The row's site.
        row: The row (its ``relative_depth`` within its stack).
        metric: The score's column (a not-applicable row is left out).

    Returns:
        The decoder's relative depth as is; the vision encoder's mapped to [-1, -0.3]; the
        projector at -0.15; None for named modules and not-applicable rows.
    """
    if site not in COMPARISON_SPANS or (site != "language" and is_not_applicable(row, metric)):
        return None
    low, high = COMPARISON_SPANS[site]
    return round(low + (high - low) * _number(row.get("relative_depth")), 9)  # -0.3, not -0.30000000000000004


def comparison_sites(data: dict) -> list[str]:
    """The stacks a run draws on the comparison figure: the decoder where it has rows, the image-only ones with a score.

    Args:
        data: A report JSON.

    Returns:
        Sites in :data:`COMPARISON_SPANS` order (named modules are never drawn there).
    """
    scored = set(scored_sites(data))
    return [site for site in COMPARISON_SPANS if site in scored or (site == "language" and data.get("layers"))]


def comparison_series(data: dict, key: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """One column of a run's rows at their comparison-figure x (:func:`comparison_x`), in x order.

    Args:
        data: A report JSON.
        key: The column (``acc``, ``ci_low``, ...).

    Returns:
        ``(xs, ys)``: for a decoder-only run, :func:`series` on relative depth (as before sites
        existed); else the scored image-only stacks' rows at negative x, then the decoder's.
    """
    sites = comparison_sites(data)
    if set(sites) <= {"language"}:
        return series(data, key, "relative_depth")
    metric = data["metric"]
    return placed_series(data, key, lambda site, row: comparison_x(site, row, metric) if site in sites else None)


def empty_panel_note(reports: list[dict], width: int = 70) -> str:
    """The caption of a comparison panel with nothing to draw ("" when a run has a score to draw).

    Args:
        reports: The panel's runs' report JSONs.
        width: Wrap the caption at this many characters (a grid cell is narrow).

    Returns:
        E.g. ``nothing to draw: vision (3 rows) not applicable, ...`` (a ``sites=vision`` run of a
        text-dependent task).
    """
    if any(has_values(comparison_series(data, data["metric"])[1]) for data in reports):
        return ""
    why = next((note for data in reports if (note := not_applicable_note(data))), "no row has a score")
    return textwrap.fill("nothing to draw: " + why.replace("\n", " "), width)


def comparison_axis(sites: set[str]) -> tuple[str, tuple[Stack, ...], tuple[tuple[float, str], ...]]:
    """The comparison figure's x label, stacks and ticks for a panel whose runs drew these sites.

    Args:
        sites: The sites with a drawn point in the panel (``vision``, ``projector``, ``language``).

    Returns:
        ``(xlabel, stacks, ticks)``; the ticks give relative depth within each stack and
        ``proj`` for the projector.
    """
    stacks = tuple(
        Stack(site, STACK_LABELS[site], *COMPARISON_SPANS[site]) for site in COMPARISON_SPANS if site in sites
    )
    ticks: list[tuple[float, str]] = []
    for stack in stacks:
        if stack.site == "projector":
            ticks.append((stack.start, "proj"))
        else:
            depths = (0.0, 0.5, 1.0) if stack.site == "vision" else (0.0, 0.25, 0.5, 0.75, 1.0)
            ticks.extend((round(stack.start + (stack.end - stack.start) * d, 9), f"{d:g}") for d in depths)
    spans = {"vision": "vision −1…−0.3", "projector": "proj −0.15", "language": "decoder 0…1"}
    # Two lines: one would overrun a grid cell of the comparison figure.
    xlabel = f"relative depth per stack\n({', '.join(spans[stack.site] for stack in stacks)})"
    return xlabel, stacks, tuple(ticks)
