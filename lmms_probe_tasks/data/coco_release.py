"""Parse the original COCO 2017 annotation files (instances, captions), cached per file version.

The local-release half of :mod:`lmms_probe_tasks.data.coco_source`: each file is parsed
once per process and version (three tasks share one parse), into a compact form; what
cannot be used (an annotation of an unknown image, an unknown category id, an empty
caption) comes back as skip events for the builder's report.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path


def normalise(text: str) -> str:
    """A caption with its whitespace collapsed (COCO captions carry stray newlines and double spaces)."""
    return " ".join(text.split())



@dataclass(frozen=True)
class Instances:
    """An instances file, compact: category names, image files, categories per image, skip events."""

    names: tuple[str, ...]
    files: dict[str, str]
    categories: dict[str, tuple[int, ...]]
    events: tuple[tuple[str, str], ...]


@functools.lru_cache(maxsize=4)
def read_instances(path: str, stamp: tuple[int, int]) -> Instances:
    """Parse an instances file into a compact form (cached: three tasks share one parse)."""
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    cats = sorted(raw["categories"], key=lambda c: int(c["id"]))
    index = {int(c["id"]): i for i, c in enumerate(cats)}
    files = {str(im["id"]): str(im["file_name"]) for im in raw["images"]}
    found: dict[str, set[int]] = {}
    events: list[tuple[str, str]] = []
    for ann in raw["annotations"]:
        key = str(ann["image_id"])
        if key not in files:
            events.append(("annotation_of_unknown_image", key))
            continue
        category = index.get(int(ann["category_id"]))
        if category is None:
            events.append(("unknown_category_id", f"{key}:{ann['category_id']}"))
            continue
        found.setdefault(key, set()).add(category)
    return Instances(
        tuple(str(c["name"]) for c in cats),
        files,
        {k: tuple(sorted(v)) for k, v in found.items()},
        tuple(events),
    )


@functools.lru_cache(maxsize=4)
def read_captions(path: str, stamp: tuple[int, int]) -> tuple[dict[str, list[str]], tuple[tuple[str, str], ...]]:
    """Parse a captions file: image id -> its non-empty captions, and the skip events (cached like instances)."""
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    captions: dict[str, list[str]] = {}
    events: list[tuple[str, str]] = []
    for ann in raw["annotations"]:
        key, text = str(ann["image_id"]), ann.get("caption")
        if not isinstance(text, str) or not text.strip():
            events.append(("empty_caption", key))
            continue
        captions.setdefault(key, []).append(normalise(text))
    return captions, tuple(events)


def stamp(path: Path) -> tuple[int, int]:
    """``(mtime_ns, size)``: the parse caches' key, so an edited file is parsed again."""
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size
