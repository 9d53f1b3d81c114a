"""Reports features that came out NaN or inf: one warning at the first such batch, counts for the rest.

A model that overflows (a late layer, float16) must not stop the run: its documents'
non-finite rows travel as they are (never cached) and become NaN rows with their
reason at aggregation, while every finite row is scored. This module keeps the record
(``config.extraction.nonfinite``) and says so once, naming the documents and rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from loguru import logger

from lmms_probe_tasks.transport import compact


def note_nonfinite(
    record: dict[str, Any], site: str, bad: np.ndarray, docs: list[str], rows: list[int], model: str, dtype: str
) -> None:
    """Record one batch's non-finite rows; warn the first time in the run.

    Args:
        record: The run's ``meta["nonfinite"]`` (site -> ``{"docs": n, "layers": [...]}``), updated in place.
        site: The site whose features these are.
        bad: ``[batch, rows]`` bool, True where a document's row is not finite.
        docs: The batch's documents (``task/doc_id``), in row order.
        rows: The site's row indices, in column order.
        model: The ``pretrained=`` value (named in the warning).
        dtype: The run's dtype (named in the warning).
    """
    hit = [docs[i] for i in np.flatnonzero(bad.any(axis=1))]
    layers = [rows[j] for j in np.flatnonzero(bad.any(axis=0))]
    what = "hidden states" if site == "language" else f"{site} features"
    where = "layers" if site == "language" else f"{site} rows"
    if not record:
        logger.warning(
            f"pretrained={model!r} (dtype={dtype}) produced NaN or inf {what} for docs {hit[:10]}"
            f"{' ...' if len(hit) > 10 else ''} at {where} {layers}. Those docs are not cached there; their "
            "non-finite rows will be NaN rows with the reason, every other row is scored. Fix: run with "
            "dtype=float32 (or bfloat16 for float16 overflow), or check the checkpoint's weights."
        )
    entry = record.setdefault(site, {"docs": 0, "layers": []})
    entry["docs"] += len(hit)
    entry["layers"] = sorted(set(entry["layers"]) | set(layers))


def keep_row(x: np.ndarray, bad: np.ndarray, cache: Any, key: str | None) -> tuple[np.ndarray | None, Any]:
    """One document's features at one site, as they travel: ``(array or None, cache path or None)``.

    Args:
        x: ``[rows, d]`` float32 features.
        bad: ``[rows]`` bool, True at non-finite rows.
        cache: The :class:`~lmms_probe_tasks.transport.FeatureCache`, or None.
        key: The document's cache key at this site (None without a cache).

    Returns:
        Finite features: written to the cache (the path travels, not the array), else the
        array as a cache round trip gives it. Non-finite ones: float32 in memory, never
        cached, the finite rows rounded as the cache would.
    """
    if bad.any():
        out = x.astype(np.float32)
        if (~bad).any():
            out[~bad] = compact(x[~bad]).astype(np.float32)
        return out, None
    # Written per batch, so a killed run resumes after its last whole batch.
    path = cache.put(key, x) if cache else None
    # With a cache file the array is not held: 50k docs must not pile up in RAM.
    return (None if path else compact(x)), path
