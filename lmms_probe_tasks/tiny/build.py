"""The architecture table and :func:`build_tiny`, the one call that writes a tiny checkpoint into a folder."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

from lmms_probe_tasks.tiny import gemma, idefics, instructblip, kosmos2, llava, mllama, qwen
from lmms_probe_tasks.tiny.checkpoint import Builder, Checkpoint
from lmms_probe_tasks.tiny.common import single_threaded

#: Architecture name -> builder writing a checkpoint into the given folder with the given seed.
BUILDERS: dict[str, Callable[[Path, int], None]] = {
    "llava": Builder(llava.llava),
    "llava_next": Builder(llava.llava_next),
    "llava_next_video": Builder(llava.llava_next_video),
    "llava_onevision": Builder(llava.llava_onevision),
    "qwen2_vl": Builder(qwen.qwen2_vl),
    "qwen2_5_vl": Builder(qwen.qwen2_5_vl),
    "qwen3_vl": Builder(qwen.qwen3_vl),
    "idefics3": Builder(idefics.idefics3),
    "smolvlm": Builder(idefics.smolvlm),
    "paligemma": Builder(gemma.paligemma),
    "gemma3": Builder(gemma.gemma3),
    "mllama": Builder(mllama.mllama),
    "kosmos2": Builder(kosmos2.kosmos2),
    "instructblip": Builder(instructblip.instructblip),
    "instructblip_t5": Builder(instructblip.instructblip_t5),
}

#: Architecture name -> builder of its *trained* tiny checkpoint: ``make(seed, steps)``
#: (``steps=None``: the recipe's). See :mod:`lmms_probe_tasks.tiny.trained`.
TRAINED_BUILDERS: dict[str, Callable[[int, int | None], Checkpoint]] = {
    "llava": lambda seed, steps: _trained_llava(seed, steps),
}

#: Extra Python packages a builder (its processor) needs beyond the package's own dependencies.
REQUIREMENTS: dict[str, tuple[str, ...]] = {
    # transformers' SmolVLMProcessor raises ImportError without num2words (it spells out
    # frame counts in video prompts), at build time and again at load time.
    "smolvlm": ("num2words",),
}


def missing_requirements(arch: str) -> list[str]:
    """The packages in :data:`REQUIREMENTS` that ``arch`` needs and this environment lacks.

    Args:
        arch: Architecture name (any string; unknown names need nothing).

    Returns:
        The missing package names, in :data:`REQUIREMENTS` order.
    """
    return [name for name in REQUIREMENTS.get(arch, ()) if importlib.util.find_spec(name) is None]


def _trained_llava(seed: int, steps: int | None) -> Checkpoint:
    """:func:`lmms_probe_tasks.tiny.trained.trained_llava`, imported on first use (it pulls in the data builders)."""
    from lmms_probe_tasks.tiny.trained import trained_llava

    return trained_llava(seed, steps)


def check_arch(arch: str, trained: bool = False) -> None:
    """Raise ``ValueError`` naming ``arch`` and the valid set if it has no builder.

    Args:
        arch: Architecture name to check.
        trained: Check against :data:`TRAINED_BUILDERS` instead.

    Raises:
        ValueError: If ``arch`` is not in :data:`BUILDERS` (or, with ``trained``, not in
            :data:`TRAINED_BUILDERS`).
    """
    if arch not in BUILDERS:
        raise ValueError(
            f"unknown tiny architecture {arch!r}; valid: {', '.join(sorted(BUILDERS))} "
            "(pass one of these names, or add a builder to lmms_probe_tasks.tiny.BUILDERS)"
        )
    if trained and arch not in TRAINED_BUILDERS:
        raise ValueError(
            f"no trained tiny checkpoint for {arch!r}; trained ones exist for: "
            f"{', '.join(sorted(TRAINED_BUILDERS))} (drop --trained for a random {arch} checkpoint)"
        )


def build_tiny(
    arch: str, out_dir: str | os.PathLike[str], seed: int = 0, *, trained: bool = False, steps: int | None = None
) -> Path:
    """Build a tiny checkpoint of a real image-text architecture, randomly initialised or trained.

    The folder loads offline with ``transformers.AutoModelForImageTextToText`` and
    ``transformers.AutoProcessor``. By default the weights are random: use it to test
    plumbing, not to get meaningful scores. With ``trained`` (``llava`` only) the
    model is trained for a few minutes on one CPU thread on shapes scenes disjoint from
    the probe tasks' documents (:mod:`lmms_probe_tasks.tiny.trained`).

    Args:
        arch: Architecture name, one of :data:`BUILDERS` (e.g. ``"llava"``).
        out_dir: Folder to write; created if missing, existing files are overwritten.
        seed: Torch seed for the weight initialisation (and, trained, of the training
            scenes and order); the same seed gives identical weights.
        trained: Build the trained checkpoint (an architecture of :data:`TRAINED_BUILDERS`).
        steps: With ``trained``: optimiser steps of each training stage instead of the
            recipe's (few steps: a quick, still deterministic build, e.g. for tests).

    Returns:
        The checkpoint folder as a :class:`pathlib.Path`.

    Raises:
        ValueError: If ``arch`` is not a known architecture (the message lists the valid
            names), has no trained builder, or ``steps`` is given without ``trained``.
        ImportError: If a package in :data:`REQUIREMENTS` for ``arch`` is missing.
    """
    check_arch(arch, trained)
    if steps is not None and not trained:
        raise ValueError(f"steps={steps!r} only applies to a trained checkpoint; pass trained=True or drop steps")
    missing = missing_requirements(arch)
    if missing:
        raise ImportError(
            f"tiny {arch}: its processor needs {', '.join(missing)}, which is not installed "
            f"(pip install {' '.join(missing)})"
        )
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    with single_threaded():
        if trained:
            Builder(lambda s: TRAINED_BUILDERS[arch](s, steps))(path, int(seed))
        else:
            BUILDERS[arch](path, int(seed))
    return path
