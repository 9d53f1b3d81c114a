"""Rows of every probed site: their names in lmms-eval's table, which apply to a task, and their report rows.

A run's features come per *site* (:mod:`lmms_probe_tasks.extract.taps`): ``language``
rows ``acc_lNN`` (today's rows, unchanged), ``vision`` rows ``acc_vNN``, the ``projector``
row ``acc_proj``, ``modules`` rows ``acc_mNN``. Image-only features (vision encoder,
projector, modules on the vision stream) can only be probed for a target that is a
function of the image (``metadata.probe.image_only``); elsewhere those rows are NaN with
the reason in the JSON, empty in the CSV, absent from the plots: the rule of the control
task.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from lmms_probe_tasks.extract.taps import IMAGE_ONLY_SITES, ROW_PREFIX, row_name
from lmms_probe_tasks.harness.results import layer_rows, summarize
from lmms_probe_tasks.harness.spec import CHANCE_ROW

_ROW_RE = {
    "language": r"l(\d+)",
    "vision": r"v(\d+)",
    "projector": r"(proj)",
    "modules": r"m(\d+)",
}


def row_key(metric: str, site: str, index: int, width: int) -> str:
    """lmms-eval's row name of one site row (zero-padded so the table sorts by depth).

    Args:
        metric: ``acc`` or ``map``.
        site: The site.
        index: The row's index within the site.
        width: The site's deepest index (wider padding past 99).

    Returns:
        E.g. ``acc_l07``, ``acc_v03``, ``acc_proj``, ``acc_m02``.
    """
    return f"{metric}_{row_name(site, index, len(str(width)))}"


def parse_row_key(metric: str, key: str) -> tuple[str, int] | None:
    """Invert :func:`row_key`: ``(site, index)``, or None when ``key`` is not a site row."""
    for site, pattern in _ROW_RE.items():
        match = re.fullmatch(rf"{metric}_{pattern}", key)
        if match:
            return site, 0 if site == "projector" else int(match.group(1))
    return None


def site_rows_of(meta: dict[str, Any]) -> dict[str, list[int]]:
    """Site -> row indices of an extraction (older extractions: the ``language`` rows alone)."""
    rows = meta.get("site_rows")
    return {site: list(ids) for site, ids in rows.items()} if rows else {"language": list(meta["layers"])}


def not_applicable(task: str, site: str, meta: dict[str, Any], index: int, image_only: bool) -> str:
    """Why a site row cannot be probed for this task ("" when it can).

    Args:
        task: The task's name.
        site: The row's site.
        meta: The extraction settings (``module_streams`` for modules).
        index: The row's index within its site.
        image_only: The task's ``metadata.probe.image_only``.
    """
    if image_only:
        return ""
    on_image = site in IMAGE_ONLY_SITES or (
        site == "modules" and (meta.get("module_streams") or [])[index : index + 1] == ["vision"]
    )
    if not on_image:
        return ""
    return (
        f"not applicable: {site} features see only the image, and {task}'s target depends on the text too "
        "(metadata.probe.image_only is false)"
    )


def report_rows(
    site: str, result: Any, ids: Sequence[int], reasons: dict[int, str], metric: str, depth: int, meta: dict
) -> list[dict]:
    """The report rows of one site: the probed rows from ``result``, NaN rows with their reason for the rest.

    Args:
        site: The site.
        result: The :class:`~lmms_probe_tasks.probe.ProtocolResult` of its probed rows, or None.
        ids: All of the site's row indices, in order.
        reasons: Row index -> why it is not probed.
        metric: The score's column.
        depth: The stack's depth (relative depth = index / depth; the decoder's ``L`` for ``language``).
        meta: The extraction settings (module names, streams).

    Returns:
        Plain dicts in ``ids`` order, each with ``site`` and ``row`` (the row-name suffix).
    """
    probed = {row["layer"]: row for row in layer_rows(result, metric, depth)} if result is not None else {}
    names, streams = meta.get("module_names") or [], meta.get("module_streams") or []
    width = len(str(depth if site == "language" else max(ids, default=0)))
    out = []
    for index in ids:
        row = probed.get(index) or {
            "layer": int(index),
            "relative_depth": index / depth if depth else 0.0,
            metric: math.nan,
            "reason": reasons.get(index, ""),
        }
        # site and row go last: the CSV keeps its 0.1 column order (layer, relative_depth, metric, ...).
        row = {**row, "site": site, "row": row_name(site, index, width)}
        if site == "modules":
            row["module"], row["stream"] = names[index], streams[index]
        out.append(row)
    return out


def site_depth(site: str, ids: Sequence[int], n_layers: int) -> int:
    """The denominator of a site's relative depth: the decoder's ``L``, else the stack's last index."""
    if site == "language":
        return n_layers
    return max(max(ids), 1) if ids else 1


class Aggregations(Mapping):
    """Aggregation functions for run-time metric names (``acc_l00`` … plus the summary)."""

    def __init__(self, task: Any) -> None:
        self._task = task
        metric = task.spec.metric
        self._metric = metric
        self._summary = {
            f"{metric}_best": "best",
            f"{metric}_last": "last",
            CHANCE_ROW[metric]: "majority_baseline",
            "best_layer": "best_layer",
        }

    def __getitem__(self, key: str) -> Callable[..., float]:
        row = parse_row_key(self._metric, key)
        if row is not None:
            return functools.partial(self._task.aggregate_row, which=row)
        if key in self._summary:
            return functools.partial(self._task.aggregate_row, which=self._summary[key])
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._task.metric_names)

    def __len__(self) -> int:
        return len(self._task.metric_names)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (parse_row_key(self._metric, key) is not None or key in self._summary)


def site_summary(rows: dict[str, list[dict]], results: dict[str, Any], metric: str, text_score: float) -> dict:
    """The report's summary: from the decoder's rows, else the first probed site's; each site's best row beside it.

    Args:
        rows: Site -> its report rows (:func:`report_rows`).
        results: Site -> its protocol result (sites with nothing probed are absent).
        metric: The score's column.
        text_score: The text-only baseline's score.

    Returns:
        :func:`~lmms_probe_tasks.harness.results.summarize` of the primary site, plus ``site``
        (which one; None when nothing could be probed) and ``sites`` (site -> ``best_row``, ``best``).
    """
    primary = "language" if "language" in results else next(iter(results), None)
    if primary is None:  # nothing applies (e.g. sites=vision on a text-dependent task)
        why = next((row["reason"] for site_rows in rows.values() for row in site_rows if row.get("reason")), "")
        summary: dict[str, Any] = dict.fromkeys(("best_layer", "best", "last", "majority_baseline"), math.nan)
        summary.update({"text_only_score": text_score, "nan_reason": why})
    else:
        summary = summarize(results[primary], rows[primary], metric, text_score)
    summary["site"] = primary
    summary["sites"] = {}
    for site, site_rows in rows.items():
        best = results[site].best_layer if site in results else None
        score = next((row[metric] for row in site_rows if row["layer"] == best), math.nan)
        summary["sites"][site] = {"best_row": best, "best": score if best is not None else math.nan}
    return summary


__all__ = [
    "ROW_PREFIX", "Aggregations", "not_applicable", "parse_row_key", "report_rows", "row_key", "site_depth",
    "site_rows_of", "site_summary",
]  # fmt: skip
