"""Hands per-layer features from the model wrapper to the task in-process, out of band.

lmms-eval turns every model output into a string, so arrays cannot travel through
responses. The wrapper puts each document's features, one :class:`DocFeatures` per
probed site (``language``: ``[n_layers + 1, hidden]``; ``vision``, ``projector``,
``modules``: see :mod:`lmms_probe_tasks.extract.taps`), into this process-wide store and
returns the store key as its response; the task's ``process_results`` (same process,
same rank) takes them back by that key.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

#: Every response of a probe request starts with this, so the task can tell a
#: feature key from a generated answer (or a response replayed by ``--use_cache``).
KEY_PREFIX = "lmms-probe-features:"


@dataclass(frozen=True)
class DocFeatures:
    """Features of one document, as the wrapper extracted them.

    Attributes:
        layers: ``[len(meta["layers"]), hidden]`` float16, one row per extracted layer; None
            when ``path`` holds them (the feature cache), so they are not kept in memory.
        meta: How they were made (model id, pooling, prompt, ...): recorded in results.
        path: The feature-cache file holding the same array, if any: then the task hands
            rank 0 this path instead of the array (features do not ride lmms-eval's gather).
    """

    layers: np.ndarray | None
    meta: dict
    path: str | None = None


class FeatureStore:
    """Thread-safe in-process mapping from response keys to :class:`DocFeatures`."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, DocFeatures]] = {}
        self._lock = threading.Lock()
        self._counter = itertools.count()

    def put(self, features: DocFeatures | Mapping[str, DocFeatures], hint: str = "") -> str:
        """Store one document's features.

        Args:
            features: What the wrapper extracted: site -> features, or the ``language`` site's alone.
            hint: Human-readable part of the key (task and doc id), for log readability.

        Returns:
            The response string that identifies the features.
        """
        with self._lock:
            key = f"{KEY_PREFIX}{hint}#{next(self._counter)}"
            self._items[key] = {"language": features} if isinstance(features, DocFeatures) else dict(features)
        return key

    def take(self, key: str) -> dict[str, DocFeatures] | None:
        """Remove and return the features stored under ``key`` (site -> features), or None when absent."""
        with self._lock:
            return self._items.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def clear(self) -> None:
        """Forget everything (tests; a new evaluation in the same process)."""
        with self._lock:
            self._items.clear()


#: The one store of this process: the wrapper writes, the task reads.
STORE = FeatureStore()

#: Extraction settings of the ``hidden_states`` model built in this process (set by the
#: wrapper; lmms-eval builds the model before the tasks). Tasks read it to pick a per-model
#: prompt (``lmms_eval_specific_kwargs.<model type or checkpoint id>``).
ACTIVE_MODEL: dict = {}
