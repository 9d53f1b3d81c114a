"""What a real-data builder reports and returns: skips by reason, one warning per kind of problem, the shuffled docs.

The COCO and SNLI-VE builders share one policy, implemented here and in
:mod:`lmms_probe_tasks.data.sources`:

* **Bad data is skipped and counted, never silently dropped.** An image that is missing
  or fails to decode, an unknown label, an empty caption or hypothesis, an id absent from
  the annotations: the item is skipped, :class:`SkipLog` counts it by reason and keeps the
  first few ids, the builder's report carries the counts, and ONE warning names them.
* **Fewer usable items than requested**: every usable item is used, the shortfall goes
  into the report and into ONE warning.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import datasets
from loguru import logger

from lmms_probe_tasks.data.contract import BuiltDocs
from lmms_probe_tasks.data.sampling import stratified_order

#: Ids kept per skip reason in reports (the count is always exact).
MAX_EXAMPLES = 5


class SkipLog:
    """Counts skipped items by reason and keeps the first few ids of each reason."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, reason: str, item: object) -> None:
        """Count one skipped item.

        Args:
            reason: Why it is skipped, e.g. ``corrupt_image``.
            item: Its id, kept (as text) among the first ``MAX_EXAMPLES`` of the reason.
        """
        self.counts[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(str(item))

    def __bool__(self) -> bool:
        return bool(self.counts)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Return plain data: ``{reason: {"count": n, "examples": [...]}}``, reasons sorted."""
        return {r: {"count": self.counts[r], "examples": list(self.examples[r])} for r in sorted(self.counts)}


def start_report(task: str, source: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """Return a builder's report before its splits are filled in.

    Args:
        task: Task name, e.g. ``coco_entailment``.
        source: Where the data came from (``{"kind": "local" | "hub", ...}``).
        params: The validated builder arguments.
    """
    return {"task": task, "source": dict(source), "params": dict(params), "splits": {}}


def split_head(source_split: str, requested: int, docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Return the first entries of a split's report: its source split, documents requested and used, images."""
    return {
        "source_split": source_split,
        "requested": requested,
        "used": len(docs),
        "images": len({d["image_id"] for d in docs}),
    }


def label_counts(values: Iterable[Hashable], names: Sequence[str]) -> dict[str, int]:
    """Count integer labels by name (every name present, zeros too)."""
    tally = Counter(values)
    return {name: tally[i] for i, name in enumerate(names)}


def summarize_problems(task: str, splits: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Log at most two warnings for a build, one for skips and one for shortfalls.

    Args:
        task: Builder name, for the message.
        splits: Per-split report dicts with ``skipped`` (from :meth:`SkipLog.to_dict`),
            ``requested`` and ``used``.

    Returns:
        The warning texts (also stored in the report).
    """
    messages = []
    skips = [
        f"{split}: "
        + ", ".join(
            f"{reason} x{info['count']} (e.g. {', '.join(info['examples'])})" for reason, info in rep["skipped"].items()
        )
        for split, rep in splits.items()
        if rep.get("skipped")
    ]
    if skips:
        messages.append(f"{task}: skipped bad items (counted in the task's data report) -- " + "; ".join(skips))
    short = [
        f"{split}: {rep['used']} of {rep['requested']} requested documents"
        for split, rep in splits.items()
        if rep["used"] < rep["requested"]
    ]
    if short:
        messages.append(
            f"{task}: the source holds fewer usable items than requested; using all of them -- " + "; ".join(short)
        )
    for message in messages:
        logger.warning(message)
    return messages


def doc_features(extra: Mapping[str, Any]) -> datasets.Features:
    """Return the features of real-data docs: ``uid``, ``probe_split``, ``image``, ``image_id``, ``text``, ``extra``."""
    string = datasets.Value("string")
    return datasets.Features(
        {"uid": string, "probe_split": string, "image": datasets.Image(), "image_id": string, "text": string, **extra}
    )


def doc_row(uid: str, split: str, image: Any, image_id: str, text: str, **target: Any) -> dict[str, Any]:
    """Return one real-data doc: the columns of :func:`doc_features`, then ``target`` (label and extra columns)."""
    return {"uid": uid, "probe_split": split, "image": image, "image_id": image_id, "text": text, **target}


def finish_docs(
    task: str,
    rows: list[dict[str, Any]],
    features: datasets.Features,
    seed: int,
    salt: int,
    stratify_by: str | None,
    report: dict[str, Any],
) -> BuiltDocs:
    """Shuffle the rows of both splits, warn once per kind of problem, and return the contract.

    Args:
        task: Builder name, for the warnings.
        rows: Probe-train then probe-test docs, one dict per doc with every column of ``features``.
        features: The docs' features (their order is the column order).
        seed: The builder's seed.
        salt: The task's salt of the shuffle stream.
        stratify_by: Column stratified on besides ``probe_split`` (None: the split only).
        report: The builder's report; gets ``warnings``.

    Returns:
        The docs in a stratified seeded order, and ``report``.
    """
    groups = [(row["probe_split"], row[stratify_by]) if stratify_by else row["probe_split"] for row in rows]
    rows = [rows[i] for i in stratified_order(seed, salt, groups)]
    report["warnings"] = summarize_problems(task, report["splits"])
    columns = {name: [row[name] for row in rows] for name in features}
    return BuiltDocs(datasets.Dataset.from_dict(columns, features=features), report)
