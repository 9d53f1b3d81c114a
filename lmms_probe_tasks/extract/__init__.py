"""Extraction: per-layer pooled features from an image-text model, and the per-family facts that needs.

Modules, in data-flow order: :mod:`~lmms_probe_tasks.extract.settings` (validate the
model args), :mod:`~lmms_probe_tasks.extract.loading` (config, processor, weights),
:mod:`~lmms_probe_tasks.extract.families` (the runtime family table),
:mod:`~lmms_probe_tasks.extract.prompts` (the one prompt builder),
:mod:`~lmms_probe_tasks.extract.layers` (which layers, where they live),
:mod:`~lmms_probe_tasks.extract.capture` (hooks and pooling),
:mod:`~lmms_probe_tasks.extract.sites` (the ``sites=``/``modules=`` args, checked at start),
:mod:`~lmms_probe_tasks.extract.taps` (what a pass captures), :mod:`~lmms_probe_tasks.extract.site_pass` (the pass),
:mod:`~lmms_probe_tasks.extract.vision` (each family's vision encoder) and
:mod:`~lmms_probe_tasks.extract.vision_layout` (its rows per document),
:mod:`~lmms_probe_tasks.extract.module_glob` (``modules=`` globs over ``named_modules()``),
:mod:`~lmms_probe_tasks.extract.prefix_plan` / :mod:`~lmms_probe_tasks.extract.shared_prefix`
(each image's common prompt prefix runs once), :mod:`~lmms_probe_tasks.extract.nonfinite`
(NaN/inf features reported, never cached),
:mod:`~lmms_probe_tasks.extract.generation` (greedy text for non-probe requests).
"""

from __future__ import annotations

from lmms_probe_tasks.extract.capture import (
    POOLING_HELP,
    POOLINGS,
    check_pooling,
    layer_capture,
    pool,
    pooling_weights,
)
from lmms_probe_tasks.extract.layers import DecoderParts, find_decoder, parse_layers
from lmms_probe_tasks.extract.site_pass import extract_batch

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
