"""Turns the probe core's result into the report's per-layer rows and summary (plain data, no lmms-eval)."""

from __future__ import annotations

import math
from typing import Any


def canonical(items: list[dict]) -> list[dict]:
    """Order payloads by doc uid, one per doc, so the fit is the same whatever the rank layout.

    lmms-eval concatenates ranks' payloads in rank order; sorting makes 1-process and
    N-process runs train on identical matrices.

    Args:
        items: The carrier payloads (each with a ``uid``).

    Returns:
        The payloads sorted by ``uid``.

    Raises:
        ValueError: Two payloads share a ``uid``.
    """
    unique = {item["uid"]: item for item in items}
    if len(unique) != len(items):
        raise ValueError(
            f"{len(items) - len(unique)} duplicate doc uid(s) among {len(items)} probe docs; "
            "every doc of a probe task needs a unique 'uid' (fix the task's builder)"
        )
    return [unique[uid] for uid in sorted(unique)]


def layer_rows(result: Any, metric: str, n_layers: int) -> list[dict]:
    """Return one report row per probed layer: ``layer``, ``relative_depth``, the metric, then the rest.

    Args:
        result: The :class:`~lmms_probe_tasks.probe.ProtocolResult` (its ``to_rows()``).
        metric: The task's metric name (``acc`` or ``map``): the score's column.
        n_layers: The model's depth ``L`` (relative depth = layer / L).

    Returns:
        Plain dicts, in layer order.
    """
    rows = result.to_rows()
    for i, row in enumerate(rows):
        score = row.pop("score")
        row.pop("metric", None)  # "accuracy"/"mAP": the column name says it
        depth = row["layer"] / n_layers if n_layers else 0.0
        row.pop("relative_depth", None)  # recomputed on the model's depth, not the deepest probed layer
        rows[i] = {"layer": row.pop("layer"), "relative_depth": depth, metric: score, **row}
    return rows


def summarize(result: Any, rows: list[dict], metric: str, text_score: float) -> dict[str, Any]:
    """Return the run-level numbers: ``best_layer``, ``best``, ``last``, baselines and notes.

    Args:
        result: The :class:`~lmms_probe_tasks.probe.ProtocolResult`.
        rows: :func:`layer_rows` of that result.
        metric: The score's column in ``rows``.
        text_score: The text-only baseline's score.

    Returns:
        The report's ``summary`` (NaN where no layer could be scored).
    """
    scores = {row["layer"]: row[metric] for row in rows}
    best = result.best_layer
    return {
        "best_layer": float(best) if best is not None else math.nan,
        "best": scores[best] if best is not None else math.nan,
        "last": scores[max(scores)] if scores else math.nan,
        "best_layer_distribution": {str(k): v for k, v in result.best_layer_prob.items()},
        "majority_baseline": result.majority_baseline,
        "text_only_score": text_score,
        "control_reason": result.control_reason,
        "control_shared": result.control_shared,
        "interval": result.interval,
        "C_at_grid_edge_layers": [layer for layer, edge in result.C_at_grid_edge.items() if edge],
        "layer_reason": {str(layer): why for layer, why in result.layer_reason.items()},
        "notes": list(result.notes),
        "nan_reason": result.reason,
    }


def describe_run(
    spec: Any,
    config: Any,
    extraction: dict,
    is_train: Any,
    builder: dict,
    data_report: dict,
    prompt: str | None,
) -> dict[str, Any]:
    """The report's ``config``: protocol, extraction, data and library versions.

    Args:
        spec: The task's :class:`~lmms_probe_tasks.harness.spec.ProbeSpec`.
        config: The :class:`~lmms_probe_tasks.probe.ProtocolConfig` fitted with.
        extraction: The wrapper's extraction settings.
        is_train: ``[docs]`` bool, True on probe-train.
        builder: The YAML's ``dataset_kwargs``.
        data_report: The builder's report (skipped items, splits).
        prompt: The task's prompt template.
    """
    from lmms_probe_tasks.report import versions

    return {
        "protocol": config.to_dict(),
        "semantics": spec.semantics,
        "extraction": extraction,
        "data": {
            "n_train": int(is_train.sum()),
            "n_test": int((~is_train).sum()),
            "label_field": spec.label_field,
            "label_names": list(spec.label_names),
            "group_field": spec.group_field or "auto (image_id, scene_id or uid)",
            "type_field": spec.type_field or "none: the control task is not applicable",
            "builder": builder,
            "report": data_report,
        },
        "prompt_template": prompt,
        "versions": versions(),
    }
