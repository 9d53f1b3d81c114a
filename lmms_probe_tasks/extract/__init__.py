"""Extraction: per-layer pooled features from an image-text model, and the per-family facts that needs.

Modules, in data-flow order: :mod:`~lmms_probe_tasks.extract.settings` (validate the
model args), :mod:`~lmms_probe_tasks.extract.loading` (config, processor, weights),
:mod:`~lmms_probe_tasks.extract.families` (the runtime family table),
:mod:`~lmms_probe_tasks.extract.prompts` (the one prompt builder),
:mod:`~lmms_probe_tasks.extract.layers` (which layers, where they live),
:mod:`~lmms_probe_tasks.extract.capture` (hooks and pooling),
:mod:`~lmms_probe_tasks.extract.generation` (greedy text for non-probe requests).
"""

from __future__ import annotations

from lmms_probe_tasks.extract.capture import (
    POOLING_HELP,
    POOLINGS,
    check_pooling,
    extract_batch,
    layer_capture,
    pool,
    pooling_weights,
)
from lmms_probe_tasks.extract.layers import DecoderParts, find_decoder, parse_layers

__all__ = [
    "POOLINGS",
    "POOLING_HELP",
    "DecoderParts",
    "check_pooling",
    "extract_batch",
    "find_decoder",
    "layer_capture",
    "parse_layers",
    "pool",
    "pooling_weights",
]
