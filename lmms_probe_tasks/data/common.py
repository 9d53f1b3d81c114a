"""Shared plumbing of the real-data sources: source choice, image checks, skip counts, reports, ordering.

The COCO and SNLI-VE builders share one policy, implemented here:

* **Bad data is skipped and counted, never silently dropped.** An image that is missing
  or fails to decode, an unknown label, an empty caption or hypothesis, an id absent from
  the annotations: the item is skipped, :class:`SkipLog` counts it by reason and keeps the
  first few ids, the builder's report dict carries the counts, and ONE warning names them.
* **Structural problems raise** with the path and the fix: a missing data folder or
  annotation file, an unknown ``source``, hub copies that do not join.
* **Fewer usable items than requested**: every usable item is used, the shortfall goes
  into the report and into ONE warning.
* **Images are opened only when selected**: candidates are walked in a seeded order and
  only as many images are fetched and decoded as the requested documents need
  (:func:`select_in_order`).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
from loguru import logger
from PIL import Image

#: Probe splits, in the order used to salt random streams.
SPLITS: tuple[str, ...] = ("train", "test")
SOURCES: tuple[str, ...] = ("auto", "local", "hub")
#: Ids kept per skip reason in reports (the count is always exact).
MAX_EXAMPLES = 5
#: An image value as ``datasets.Image`` stores it: a file path or encoded bytes.
ImageValue = dict[str, Any]
#: What fetching one image gives: its value, or the skip reason.
Fetched = ImageValue | str

MISSING_IMAGE = "missing_image"
CORRUPT_IMAGE = "corrupt_image"
#: Skip reason of images past PIL's decompression-bomb limit (raise PIL.Image.MAX_IMAGE_PIXELS to admit them).
IMAGE_TOO_LARGE = "image_too_large"


# ------------------------------------------------------------------ validation
def _is_int(value: object) -> TypeGuard[int | np.integer]:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_int(name: str, value: object, minimum: int, example: int) -> int:
    """Return ``value`` as an int, or raise naming the argument, the range and a fix.

    Raises:
        ValueError: ``value`` is not a whole number >= ``minimum``.
    """
    if not _is_int(value) or int(value) < minimum:
        raise ValueError(f"{name} must be an int >= {minimum} (got {value!r}); pass e.g. {name}={example}")
    return int(value)


def check_choice(name: str, value: object, allowed: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise naming the allowed set.

    Raises:
        ValueError: ``value`` is not allowed.
    """
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))} (got {value!r})")
    return str(value)


def check_sizes(n_train: object, n_test: object, seed: object) -> tuple[int, int, int]:
    """Validate the three arguments every builder takes."""
    return (
        check_int("n_train", n_train, 1, 10_000),
        check_int("n_test", n_test, 1, 2_000),
        check_int("seed", seed, 0, 0),
    )


# ---------------------------------------------------------------------- source
def resolve_source(source: object, env_var: str, folder: str | os.PathLike[str] | None, kwarg: str) -> Path | None:
    """Decide where the data comes from: a local folder (returned) or the hub (None).

    Args:
        source: ``auto`` (the folder if one is given or ``env_var`` is set, else the
            hub), ``local`` or ``hub``.
        env_var: Environment variable naming the local folder.
        folder: The builder's folder argument; wins over ``env_var``.
        kwarg: Name of that builder argument, for messages.

    Returns:
        The local folder, or None for the hub.

    Raises:
        ValueError: ``source`` is unknown, or ``local`` without a folder.
        FileNotFoundError: The folder does not exist.
    """
    source = check_choice("source", source, SOURCES)
    chosen = folder if folder not in (None, "") else os.environ.get(env_var) or None
    if source == "hub" or (source == "auto" and chosen is None):
        return None
    if chosen is None:
        raise ValueError(
            f"source='local' needs the data folder: set {env_var}=/path/to/folder or pass {kwarg}=...; "
            "or use source='hub'"
        )
    path = Path(chosen).expanduser()
    if not path.is_dir():
        origin = f"{kwarg}={folder!r}" if folder not in (None, "") else f"{env_var}={chosen!r}"
        raise FileNotFoundError(
            f"{origin} names {path}, which is not a folder. Point {env_var} (or {kwarg}) at the folder of "
            f"the original release, or unset it (and leave source='auto') to load the hub copy."
        )
    return path


def require_file(path: Path, what: str, env_var: str) -> Path:
    """Return ``path`` if it is a file, else raise naming it and the expected layout.

    Raises:
        FileNotFoundError: ``path`` is missing.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} not found: {path}. The folder named by {env_var} must hold the original release's "
            f"files in their original layout (see docs/data_sources.md); download the missing file or fix {env_var}."
        )
    return path


# ---------------------------------------------------------------- skip counts
class SkipLog:
    """Counts skipped items by reason and keeps the first few ids of each reason."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}

    def add(self, reason: str, item: object) -> None:
        """Count one skipped item."""
        self.counts[reason] = self.counts.get(reason, 0) + 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(str(item))

    def __bool__(self) -> bool:
        return bool(self.counts)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain data: ``{reason: {"count": n, "examples": [...]}}``, reasons sorted."""
        return {r: {"count": self.counts[r], "examples": list(self.examples[r])} for r in sorted(self.counts)}


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


# ---------------------------------------------------------------------- images
def decode_problem(data: bytes | Path) -> str | None:
    """Return None if the image fully decodes, else the skip reason.

    A full ``load()`` (not ``verify()``) so truncated files are caught here, not when
    the model first touches the image.
    """
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            image.load()
    except FileNotFoundError:
        return MISSING_IMAGE
    except Image.DecompressionBombError:
        # Over twice PIL's MAX_IMAGE_PIXELS (~179 Mpx): decoding could exhaust memory.
        return IMAGE_TOO_LARGE
    except (OSError, SyntaxError, ValueError):
        return CORRUPT_IMAGE
    return None


def check_image_files(paths: Mapping[str, Path], workers: int = 8) -> dict[str, Fetched]:
    """Decode each file once (threads: PIL releases the GIL); map id -> ``{"path": ...}`` or reason."""

    def one(item: tuple[str, Path]) -> tuple[str, Fetched]:
        key, path = item
        problem = decode_problem(path)
        return key, problem if problem else {"path": str(path), "bytes": None}

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return dict(pool.map(one, paths.items()))


def image_cache_dir(source: str, split: str) -> Path:
    """Folder where images streamed from a hub copy are written once, so docs hold paths, not bytes."""
    import datasets

    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.strip("/"))[-80:]
    digest = hashlib.sha1(source.encode()).hexdigest()[:8]  # keeps two local folders with one name apart
    return Path(datasets.config.HF_DATASETS_CACHE) / "lmms_probe_tasks" / "images" / f"{safe}-{digest}" / split


def store_image_bytes(data: bytes, folder: Path, key: str) -> Fetched:
    """Check that ``data`` decodes, write it to ``folder/<key>`` once; return its value or the reason."""
    problem = decode_problem(data)
    if problem:
        return problem
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / re.sub(r"[^A-Za-z0-9_.-]+", "_", key)
    if not (path.is_file() and path.stat().st_size == len(data)):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # atomic: a concurrent rank never reads a half-written file
    return {"path": str(path), "bytes": None}


# ------------------------------------------------------------------- selection
def batch_target(remaining: int) -> float:
    """Documents' worth of candidates fetched per batch: what is still needed, plus 5 % + 8 for bad images."""
    return remaining * 1.05 + 8


def select_in_order(
    order: Sequence[str],
    n_docs: int,
    yield_of: Callable[[str], int],
    fetch: Callable[[list[str]], Mapping[str, Fetched]],
    skips: SkipLog,
) -> tuple[list[str], dict[str, ImageValue]]:
    """Walk candidate images in order, fetching in batches, until they yield ``n_docs`` documents.

    Only a little more than what is still needed is fetched per batch (a 5 % + 8 margin
    for images that turn out bad), so a 10k-document task never opens a whole split.
    An image that fails is counted in ``skips`` once the walk reaches it.

    Args:
        order: Candidate image ids in the seeded order.
        n_docs: Documents wanted.
        yield_of: How many documents an image gives (> 0).
        fetch: Maps a batch of ids to image values or skip reasons.
        skips: Where failures are counted.

    Returns:
        The chosen ids (a prefix of the usable candidates) and their image values.
    """
    chosen: list[str] = []
    images: dict[str, ImageValue] = {}
    total, pos = 0, 0
    while total < n_docs and pos < len(order):
        batch, expected = [], 0
        target = batch_target(n_docs - total)
        while pos < len(order) and expected < target:
            batch.append(order[pos])
            expected += yield_of(order[pos])
            pos += 1
        fetched = fetch(batch)
        for key in batch:
            if total >= n_docs:
                break
            value = fetched.get(key, MISSING_IMAGE)
            if isinstance(value, str):
                skips.add(value, key)
                continue
            chosen.append(key)
            images[key] = value
            total += yield_of(key)
    return chosen, images


def label_quotas(n: int, k: int) -> list[int]:
    """Split ``n`` documents over ``k`` labels as evenly as possible (earlier labels get the remainder)."""
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def stratified_order(rng: np.random.Generator, groups: Sequence[Hashable]) -> list[int]:
    """Return a seeded order in which every prefix holds each group in about its overall share.

    Each group is permuted, its k-th member of n gets the key (k + u) / n with u uniform
    in [0, 1), and rows are sorted by key: a shuffle whose prefixes (lmms-eval's
    ``--limit``) still mix splits and labels.
    """
    members: dict[Hashable, list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    keys = np.empty(len(groups))
    for group in sorted(members, key=repr):  # fixed iteration order for determinism
        idx = np.asarray(members[group])[rng.permutation(len(members[group]))]
        keys[idx] = (np.arange(len(idx)) + rng.random(len(idx))) / len(idx)
    return [int(i) for i in np.argsort(keys, kind="stable")]


def counts(values: Iterable[Hashable], names: Sequence[str] | None = None) -> dict[str, int]:
    """Count values; with ``names``, report integer labels by name (every name present, zeros too)."""
    tally: dict[Hashable, int] = {}
    for value in values:
        tally[value] = tally.get(value, 0) + 1
    if names is not None:
        return {name: tally.get(i, 0) for i, name in enumerate(names)}
    return {str(k): v for k, v in sorted(tally.items(), key=lambda kv: repr(kv[0]))}


def seeded_rng(seed: int, salt: int, split: str) -> np.random.Generator:
    """Independent random stream per (seed, task, split): growing n_test never changes train docs."""
    return np.random.default_rng([seed, salt, SPLITS.index(split)])


def open_stream(source: str, split: str, columns: list[str], env_var: str, filters: list | None = None) -> Any:
    """Stream one split of a hub dataset (or a local folder in its layout), reading only ``columns``.

    Parquet column projection means the text pass never downloads image bytes; a
    ``filters`` expression (pushed down to the parquet reader) limits the image pass to the
    selected rows. An ``image`` column is returned undecoded (``{"bytes", "path"}``).

    Raises:
        RuntimeError: The dataset cannot be opened (offline, unknown id, wrong layout).
    """
    import datasets

    try:
        ds = datasets.load_dataset(source, split=split, streaming=True, columns=columns, filters=filters)
    except Exception as exc:  # noqa: BLE001 -- any loading failure gets the offline fix attached
        raise hub_error(source, exc, env_var) from exc
    if "image" in columns:
        ds = ds.cast_column("image", datasets.Image(decode=False))
    return ds


def hub_error(dataset: str, exc: Exception, env_var: str) -> RuntimeError:
    """Wrap a hub loading failure with the offline alternative."""
    return RuntimeError(
        f"could not load {dataset!r} ({type(exc).__name__}: {exc}). Without network access, download the "
        f"original release and set {env_var} to its folder (see docs/data_sources.md), or pass a local folder "
        "of the hub copy's parquet files instead of the hub id."
    )
