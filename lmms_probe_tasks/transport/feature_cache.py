"""Content-addressed, checksummed on-disk store of per-document features (resume and re-probing).

A document's features are keyed by everything that determines them: the model
(id, resolved revision, a hash of its config), dtype, pooling, layers, init, blind
mode, the exact prompt text, a hash of the image pixels, the storage format and the
versions of this package and transformers. A changed prompt template, pooling or set
of weights therefore never reuses stale features, and an unchanged document always does.

Each document is one file ``<root>/<key[:2]>/<key>.npy``: a 32-byte SHA-256 of the
payload followed by the ``.npy`` bytes of a ``[n_layers, hidden]`` float16 array
``x / s`` and of its ``[n_layers]`` float32 power-of-two scales ``s`` (one per layer:
``s >= max|x|``), so no finite activation overflows and every vector keeps a relative
precision of 2**-11 of its largest component (:func:`encode`, :func:`decode`).
Writes go to a temporary file in the same folder and are renamed into place (atomic
on POSIX), so a run killed at any moment leaves only whole files; a file whose
checksum fails is reported and recomputed, never read. Ranks of a data-parallel run
write their own documents' files; a multi-node run needs ``root`` on a shared
filesystem (or ``feature_cache=none``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger

_DIGEST = 32
#: Version of the on-disk layout; part of every key, so files of another layout are never read.
CACHE_FORMAT = 2
#: :func:`decode` returns float16 (half the memory) when every scale lies in this range.
_F16_SCALES = (2.0**-8, 2.0**15)


def encode(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split ``[n_layers, hidden]`` features into float16 ``x / s`` and float32 power-of-two scales ``s``.

    Args:
        features: Finite float features, one row per layer.

    Returns:
        ``(scaled, scales)``: ``[n_layers, hidden]`` float16 with ``|scaled| <= 1`` and
        ``[n_layers]`` float32 (1 for an all-zero row).

    Raises:
        ValueError: A feature is NaN or inf (names the rows).
    """
    x = np.asarray(features, dtype=np.float32)
    finite = np.isfinite(x).all(axis=-1)
    if not finite.all():
        raise ValueError(f"features of rows {np.flatnonzero(~finite).tolist()} are NaN or inf; they are not stored")
    peak = np.abs(x).max(axis=-1).astype(np.float64)
    exponent = np.ceil(np.log2(np.where(peak > 0, peak, 1.0)))
    scales = np.ldexp(1.0, np.clip(exponent, -149, 127).astype(np.int32)).astype(np.float32)
    return (x / scales[:, None]).astype(np.float16), scales


def decode(scaled: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Undo :func:`encode`: float16 when that is exact (every scale in ``[2**-8, 2**15]``), else float32.

    Args:
        scaled: ``[n_layers, hidden]`` float16.
        scales: ``[n_layers]`` float32.

    Returns:
        The ``[n_layers, hidden]`` features.
    """
    x = scaled.astype(np.float32) * scales[:, None]
    lo, hi = _F16_SCALES
    return x.astype(np.float16) if bool(((scales >= lo) & (scales <= hi)).all()) else x


def compact(features: np.ndarray) -> np.ndarray:
    """The features exactly as a cache round trip returns them (what travels when the cache is off)."""
    return decode(*encode(features))


def _decode_payload(payload: bytes) -> np.ndarray | None:
    """The features of a checksummed payload, or None when it is not of :data:`CACHE_FORMAT`."""
    buffer = io.BytesIO(payload)
    try:
        scaled = np.lib.format.read_array(buffer, allow_pickle=False)
        scales = np.lib.format.read_array(buffer, allow_pickle=False)
    except (ValueError, EOFError):
        return None
    if scaled.dtype != np.float16 or scales.shape != scaled.shape[:1]:
        return None
    return decode(scaled, scales)


def default_root() -> Path:
    """Return ``$LMMS_PROBE_FEATURE_CACHE``, else ``$XDG_CACHE_HOME/lmms_probe_tasks/features`` (``~/.cache``)."""
    if os.environ.get("LMMS_PROBE_FEATURE_CACHE"):
        return Path(os.environ["LMMS_PROBE_FEATURE_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lmms_probe_tasks" / "features"


def image_digest(images: Iterable[Any]) -> str:
    """Hash the images' mode, size and pixels with SHA-256 (what the model sees, not the file bytes).

    Args:
        images: The PIL images a document is run with.

    Returns:
        The hex digest.
    """
    h = hashlib.sha256()
    for image in images:
        h.update(f"{image.mode}|{image.size}|".encode())
        h.update(image.tobytes())
    return h.hexdigest()


def doc_key(fingerprint: dict, prompt: str, images_digest: str) -> str:
    """Return the content key of one document's features.

    Args:
        fingerprint: Everything about the model and extraction settings (JSON-able).
        prompt: The exact prompt text given to the processor.
        images_digest: :func:`image_digest` of the document's (blind-mode) images.

    Returns:
        A SHA-256 hex digest.
    """
    payload = json.dumps({"model": fingerprint, "prompt": prompt, "images": images_digest}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _payload(blob: bytes) -> bytes | None:
    """The ``.npy`` bytes of a feature file's contents, or None when its checksum fails."""
    digest, payload = blob[:_DIGEST], blob[_DIGEST:]
    if len(blob) <= _DIGEST or hashlib.sha256(payload).digest() != digest:
        return None
    return payload


def read_verified(path: str | os.PathLike) -> np.ndarray:
    """Read one feature file, checking its checksum.

    Args:
        path: The file (as :meth:`FeatureCache.path` names it).

    Returns:
        The ``[n_layers, hidden]`` features (:func:`decode`).

    Raises:
        ValueError: The file is corrupt or of another format (names it).
        FileNotFoundError: The file is absent, e.g. written by another node of a multi-node
            run without a shared filesystem.
    """
    payload = _payload(Path(path).read_bytes())
    features = None if payload is None else _decode_payload(payload)
    if features is None:
        raise ValueError(f"feature cache file {path} fails its checksum or format check; rerun to recompute it")
    return features


class FeatureCache:
    """Per-document feature files under one root folder.

    Problems never stop a run: a corrupt file is counted, logged and recomputed; a folder
    that cannot be written (read-only, disk full) turns writing off with one warning
    naming the folder and the fix, and the run goes on without caching.

    Attributes:
        root: The folder.
        stats: Counts of ``hits``, ``writes``, ``corrupt`` (failed checksum) and
            ``write_errors``; recorded in every result.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()
        self.stats = {"hits": 0, "writes": 0, "corrupt": 0, "write_errors": 0}
        self._writable = True
        self._lock = threading.Lock()

    def path(self, key: str) -> Path:
        """Return the file of a key: ``<root>/<key[:2]>/<key>.npy``."""
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        """Return the stored array, or None when absent or corrupt (then counted and logged).

        Args:
            key: A :func:`doc_key`.
        """
        path = self.path(key)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning(f"feature cache: cannot read {path} ({exc}); recomputing it")
            return None
        payload = _payload(blob)
        array = None if payload is None else _decode_payload(payload)
        if array is None:
            with self._lock:
                self.stats["corrupt"] += 1
            logger.warning(f"feature cache: {path} fails its checksum (corrupted); it is recomputed and rewritten")
            return None
        with self._lock:
            self.stats["hits"] += 1
        return array

    def put(self, key: str, array: np.ndarray) -> Path | None:
        """Store an array atomically (temporary file, then rename).

        Args:
            key: A :func:`doc_key`.
            array: ``[n_layers, hidden]`` finite features (stored with :func:`encode`).

        Returns:
            The file's path, or None if writing is (now) off.

        Raises:
            ValueError: A feature is NaN or inf (never stored).
        """
        scaled, scales = encode(array)
        if not self._writable:
            return None
        path = self.path(key)
        buffer = io.BytesIO()
        np.save(buffer, scaled, allow_pickle=False)
        np.save(buffer, scales, allow_pickle=False)
        payload = buffer.getvalue()
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:8]}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:
                handle.write(hashlib.sha256(payload).digest())
                handle.write(payload)
            os.replace(tmp, path)
        except OSError as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            with self._lock:
                self.stats["write_errors"] += 1
                first = self._writable
                self._writable = False
            if first:
                logger.warning(
                    f"feature cache: cannot write under {self.root} ({exc.strerror or exc}); caching is off for "
                    "the rest of this run (scores are unaffected). Fix: free space or permissions, or pass "
                    "feature_cache=<writable folder> or feature_cache=none in --model_args."
                )
            return None
        with self._lock:
            self.stats["writes"] += 1
        return path


def open_cache(value: str | os.PathLike | None) -> FeatureCache | None:
    """Turn a ``feature_cache=`` model arg into a cache, or None when caching is off.

    Args:
        value: ``default`` (:func:`default_root`), a folder, or ``none``/``off``/``false``/empty.

    Returns:
        The cache, or None.
    """
    if value is None or str(value).lower() in ("none", "off", "false", ""):
        return None
    return FeatureCache(default_root() if value == "default" else str(value))
