"""Hands a task's features to the user: one safetensors file per task and site, streamed layer by layer.

The file is written in the safetensors format itself (an 8-byte little-endian header
length, a JSON header of dtype/shape/offsets per tensor plus string metadata, then the raw
little-endian bytes) so that ``features`` ``[layers, docs, dim]`` goes to disk one layer at a
time from the layer-major store (an array or a ``numpy.memmap``): no second copy of all
layers is ever made. Any safetensors reader loads it (``safetensors.numpy.load_file``,
``safe_open``).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

#: numpy dtype -> safetensors dtype name.
_DTYPES = {
    np.dtype(np.float16): "F16",
    np.dtype(np.float32): "F32",
    np.dtype(np.float64): "F64",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.uint8): "U8",
}


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> Path:
    """Write ``tensors`` to ``path`` as safetensors, streaming each 3-d tensor one leading slice at a time.

    Args:
        path: Output file (its folder is created; written to a temporary name, then renamed).
        tensors: Name -> array (ndarray or memmap) of a dtype in :data:`_DTYPES`.
        metadata: String -> string metadata (safetensors' ``__metadata__``).

    Returns:
        The written path.

    Raises:
        ValueError: A dtype safetensors cannot hold here, or non-string metadata.
    """
    header: dict[str, object] = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}}
    offset = 0
    for name, array in tensors.items():
        dtype = np.dtype(array.dtype)
        if dtype not in _DTYPES:
            raise ValueError(f"tensor {name!r} has dtype {dtype}; exportable: {', '.join(map(str, _DTYPES))}")
        size = int(np.prod(array.shape, dtype=np.int64)) * dtype.itemsize
        header[name] = {"dtype": _DTYPES[dtype], "shape": list(array.shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data start stays 8-byte aligned, as the reference writer does
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        handle.write(struct.pack("<Q", len(blob)))
        handle.write(blob)
        for array in tensors.values():
            little = np.dtype(array.dtype).newbyteorder("<")
            for part in array if array.ndim >= 3 else (array,):  # a layer at a time
                handle.write(np.ascontiguousarray(part, dtype=little).tobytes())
    os.replace(tmp, path)
    return path


def export_features(
    folder: str | os.PathLike,
    site: str,
    features: np.ndarray,
    *,
    doc_id: np.ndarray,
    is_train: np.ndarray,
    target: np.ndarray,
    layers: list[int],
    metadata: Mapping[str, object],
) -> Path:
    """Write ``<folder>/<site>.safetensors`` with the tensors a user needs to re-probe one site.

    Args:
        folder: ``<output_path>/probes/<model>/features/<task>``.
        site: ``language``, ``vision``, ``projector`` or ``modules``.
        features: ``[layers, docs, dim]`` (float16 or float32; array or memmap), docs in ``doc_id`` order.
        doc_id: ``[docs]`` lmms-eval's doc ids.
        is_train: ``[docs]`` bool, probe-train.
        target: ``[docs]`` class ids or ``[docs, classes]`` 0/1.
        layers: The layer ids of ``features``' rows.
        metadata: Task, site, pooling, model, revision, class names, ... (lists and dicts go in as JSON).

    Returns:
        The written path.
    """
    tensors = {
        "features": features,
        "doc_id": np.asarray(doc_id, dtype=np.int64),
        "split": (~np.asarray(is_train, dtype=bool)).astype(np.uint8),  # 0 probe-train, 1 probe-test
        "target": np.asarray(target, dtype=np.int64),
        "layer": np.asarray(layers, dtype=np.int64),
    }
    text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    return write_safetensors(Path(folder) / f"{site}.safetensors", tensors, text)


__all__ = ["export_features", "write_safetensors"]
