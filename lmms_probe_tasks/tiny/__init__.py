"""Tiny, randomly initialised checkpoints of real image-text architectures, built offline (tests, CI, demo).

The architectures are real ``transformers`` model and processor classes; only the
sizes are tiny. :data:`BUILDERS` covers LLaVA, LLaVA-NeXT(-Video), LLaVA-OneVision,
Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Idefics3, SmolVLM, PaliGemma, Gemma 3, Mllama,
Kosmos-2 and InstructBLIP (Vicuna-style LLaMA and Flan-T5-style decoders). Each ships
a chat template exactly when the real checkpoints do (PaliGemma, Kosmos-2 and
InstructBLIP have none). How each family is prompted, batched and read out (where
its language hidden states are, which stack is probed, ...) is recorded in
:mod:`lmms_probe_tasks.extract.families`; :data:`REQUIREMENTS` lists extra packages a
builder needs (SmolVLM: ``num2words``).

The weights are RANDOM: a tiny checkpoint exercises the real model classes,
processors, chat templates and ``output_hidden_states`` plumbing end to end in
milliseconds on a CPU, but any score computed from it is meaningless. The one
exception is ``build_tiny("llava", path, trained=True)`` (``--trained`` on the command
line): the LLaVA checkpoint trained for about two minutes on one CPU thread on shapes
scenes disjoint from the probe tasks' documents (:mod:`~lmms_probe_tasks.tiny.trained`),
whose per-layer probe scores are real and beat its random-init twin.

Everything is built locally (no model hub): the configs are written out with tiny
sizes, the model is instantiated from them under a fixed torch seed, and the
tokenizer is a byte-level BPE trained in memory on a small built-in English corpus,
so it encodes any text without unknown tokens.

Layout: :mod:`~lmms_probe_tasks.tiny.build` (the architecture tables, :func:`build_tiny`),
:mod:`~lmms_probe_tasks.tiny.cli` (the command line), :mod:`~lmms_probe_tasks.tiny.checkpoint`
(smoke check + save), :mod:`~lmms_probe_tasks.tiny.common` (sizes, seeding, config helpers),
:mod:`~lmms_probe_tasks.tiny.tokenizer`, :mod:`~lmms_probe_tasks.tiny.templates`, and one
module per family group (``llava``, ``qwen``, ``idefics``, ``gemma``, ``mllama``,
``kosmos2``, ``instructblip``), each with one function per architecture that returns
the model and processor in memory; the trained LLaVA is :mod:`~lmms_probe_tasks.tiny.trained`
(recipe, builder), :mod:`~lmms_probe_tasks.tiny.trained_data` (training set, disjoint seeds)
and :mod:`~lmms_probe_tasks.tiny.training` (the optimisation loops).

Usage::

    python -m lmms_probe_tasks.tiny llava /tmp/tiny-llava --seed 0
    python -m lmms_probe_tasks.tiny llava /tmp/tiny-llava-trained --trained   # ~2-2.5 min

    from lmms_probe_tasks.tiny import build_tiny
    path = build_tiny("llava", "/tmp/tiny-llava")
    model = transformers.AutoModelForImageTextToText.from_pretrained(path)
    processor = transformers.AutoProcessor.from_pretrained(path)
"""

from __future__ import annotations

from lmms_probe_tasks.tiny.build import BUILDERS, REQUIREMENTS, TRAINED_BUILDERS, build_tiny, missing_requirements
from lmms_probe_tasks.tiny.cli import main
from lmms_probe_tasks.tiny.llava import LLAVA_IMAGE_TOKEN, LLAVA_IMAGE_TOKEN_ID, LLAVA_NUM_IMAGE_TOKENS

__all__ = [
    "BUILDERS",
    "LLAVA_IMAGE_TOKEN",
    "LLAVA_IMAGE_TOKEN_ID",
    "LLAVA_NUM_IMAGE_TOKENS",
    "REQUIREMENTS",
    "TRAINED_BUILDERS",
    "build_tiny",
    "main",
    "missing_requirements",
]
