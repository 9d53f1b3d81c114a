"""Transport: hands per-layer features from the model wrapper to the task (store, disk cache, stacking).

:mod:`~lmms_probe_tasks.transport.store` carries one document's features from the
wrapper's response to the task's ``process_results`` in the same process;
:mod:`~lmms_probe_tasks.transport.feature_cache` keeps them on disk for resume and
re-probing; :mod:`~lmms_probe_tasks.transport.stacking` stacks them layer-major for the
probe core; :mod:`~lmms_probe_tasks.transport.export` hands them to the user as safetensors.
"""

from __future__ import annotations

from lmms_probe_tasks.transport.export import export_features, write_safetensors
from lmms_probe_tasks.transport.feature_cache import (
    CACHE_FORMAT,
    FeatureCache,
    compact,
    decode,
    doc_key,
    encode,
    image_digest,
    open_cache,
    read_verified,
)
from lmms_probe_tasks.transport.stacking import layer_major
from lmms_probe_tasks.transport.store import ACTIVE_MODEL, KEY_PREFIX, STORE, DocFeatures, FeatureStore

__all__ = [
    "ACTIVE_MODEL",
    "CACHE_FORMAT",
    "KEY_PREFIX",
    "STORE",
    "compact",
    "decode",
    "DocFeatures",
    "FeatureCache",
    "FeatureStore",
    "doc_key",
    "encode",
    "export_features",
    "image_digest",
    "layer_major",
    "open_cache",
    "write_safetensors",
    "read_verified",
]
