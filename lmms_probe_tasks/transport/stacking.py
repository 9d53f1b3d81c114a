"""Stacks the documents' per-layer features into one layer-major array for the probe core."""

from __future__ import annotations

import os
import tempfile

import numpy as np

from lmms_probe_tasks.transport.feature_cache import read_verified

#: Default size above which :func:`layer_major` builds a ``numpy.memmap`` (2 GiB).
MEMMAP_BYTES = 2 << 30


def _features(item: dict) -> np.ndarray:
    """One payload's ``[n_layers, hidden]`` array: carried along, or read from its cache file."""
    if "x" in item:
        return item["x"]
    try:
        return read_verified(item["x_path"])
    except FileNotFoundError:
        raise FileNotFoundError(
            f"feature cache file {item['x_path']} is not visible on this node: a multi-node run needs "
            "feature_cache=<folder on a shared filesystem>, or feature_cache=none"
        ) from None


def _allocate(shape: tuple[int, int, int], dtype: type, limit: int) -> np.ndarray:
    """An empty array, or a ``numpy.memmap`` in an anonymous temporary file when above ``limit`` bytes."""
    if int(np.prod(shape)) * np.dtype(dtype).itemsize > limit:
        suffix = ".f16" if dtype == np.float16 else ".f32"
        handle = tempfile.NamedTemporaryFile(prefix="lmms_probe_layers_", suffix=suffix, delete=False)
        out: np.ndarray = np.memmap(handle.name, dtype=dtype, mode="w+", shape=shape)
        os.unlink(handle.name)  # the mapping keeps the data; the name goes now, the space when unmapped
        return out
    return np.empty(shape, dtype=dtype)


def layer_major(items: list[dict], memmap_bytes: int | None = None) -> np.ndarray:
    """Stack the documents' ``[n_layers, hidden]`` features into ``[n_layers, n_docs, hidden]``.

    Each item carries its array (``x``) or the path of its feature-cache file (``x_path``).
    The result is float16 while every document's features are float16 (the cache hands
    out float16 whenever that is exact, see :func:`~lmms_probe_tasks.transport.feature_cache.decode`);
    the first float32 document (activations beyond float16's range) widens it to float32
    once, copying what was filled. It is filled in place, one document at a time; above
    ``memmap_bytes`` (default ``$LMMS_PROBE_MEMMAP_BYTES`` or 2 GiB) it is a ``numpy.memmap``
    in a temporary file, so 50k docs x 33 layers x 4096 dims (13.5 GB) never sit in RAM.

    Args:
        items: The carrier payloads, in document order.
        memmap_bytes: Size limit of an in-memory result, in bytes.

    Returns:
        The float16 or float32 array ``[n_layers, len(items), hidden]``.

    Raises:
        FileNotFoundError: A cache file another node wrote is not visible here.
    """
    first = _features(items[0])
    shape = (first.shape[0], len(items), first.shape[1])
    limit = memmap_bytes if memmap_bytes is not None else int(os.environ.get("LMMS_PROBE_MEMMAP_BYTES", MEMMAP_BYTES))
    out = _allocate(shape, np.float16 if first.dtype == np.float16 else np.float32, limit)
    out[:, 0, :] = first
    for i, item in enumerate(items[1:], start=1):
        x = _features(item)
        if x.dtype != np.float16 and out.dtype == np.float16:
            wide = _allocate(shape, np.float32, limit)
            for layer in range(shape[0]):  # one layer at a time: no second full-size temporary
                wide[layer, :i] = out[layer, :i]
            out = wide
        out[:, i, :] = x
    return out
