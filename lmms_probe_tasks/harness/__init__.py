"""Harness: the lmms-eval glue of every probe task (task class, probe spec, doc functions).

The shared YAML template names these by dotted path (``!function
lmms_probe_tasks.harness.ProbeTask``, ``lmms_probe_tasks.harness.doc_to_text``, ...), so
they are re-exported here: :mod:`~lmms_probe_tasks.harness.task` (the task class),
:mod:`~lmms_probe_tasks.harness.spec` (``metadata.probe``),
:mod:`~lmms_probe_tasks.harness.docs` (doc functions),
:mod:`~lmms_probe_tasks.harness.results` (protocol result -> report rows).
"""

from __future__ import annotations

from lmms_probe_tasks.harness.docs import doc_to_target, doc_to_text, doc_to_visual
from lmms_probe_tasks.harness.spec import ProbeSpec
from lmms_probe_tasks.harness.task import ProbeTask, load_builder

__all__ = ["ProbeSpec", "ProbeTask", "doc_to_target", "doc_to_text", "doc_to_visual", "load_builder"]
