"""Where a real-data builder's items come from: the local release or a hub copy, and which images get fetched.

* **Structural problems raise** with the path and the fix: a missing data folder or
  annotation file, an unknown ``source``, hub copies that cannot be loaded.
* **Images are opened only when selected**: candidates are walked in a seeded order and
  only as many images are fetched and decoded as the requested documents need
  (:func:`select_in_order`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lmms_probe_tasks.data.contract import check_choice
from lmms_probe_tasks.data.images import MISSING_IMAGE, Fetched, ImageValue
from lmms_probe_tasks.data.reports import SkipLog

SOURCES: tuple[str, ...] = ("auto", "local", "hub")


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


def open_stream(source: str, split: str, columns: list[str], env_var: str, filters: list | None = None) -> Any:
    """Stream one split of a hub dataset (or a local folder in its layout), reading only ``columns``.

    Parquet column projection means the text pass never downloads image bytes; a
    ``filters`` expression (pushed down to the parquet reader) limits the image pass to the
    selected rows. An ``image`` column is returned undecoded (``{"bytes", "path"}``).

    Args:
        source: Hub id, or a local folder of parquet files in the hub layout.
        split: The copy's split name.
        columns: Columns to read.
        env_var: Environment variable of the local release, named in the offline fix.
        filters: A parquet filter, e.g. ``[("image_id", "in", ids)]``.

    Returns:
        A ``datasets.IterableDataset``.

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


# ------------------------------------------------------------------- selection
def one_doc(key: str) -> int:
    """Documents a candidate gives when each gives one (a ``yield_of`` for :func:`select_in_order`)."""
    return 1


def batch_target(remaining: int) -> float:
    """Return the documents' worth of candidates fetched per batch: what is still needed + 5 % + 8 for bad images."""
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
