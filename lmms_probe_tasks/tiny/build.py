"""The architecture table and :func:`build_tiny`, the one call that writes a tiny checkpoint into a folder."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

from lmms_probe_tasks.tiny import gemma, idefics, instructblip, kosmos2, llava, mllama, qwen
from lmms_probe_tasks.tiny.checkpoint import Builder
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


def check_arch(arch: str) -> None:
    """Raise ``ValueError`` naming ``arch`` and the valid set if it has no builder.

    Args:
        arch: Architecture name to check.

    Raises:
        ValueError: If ``arch`` is not in :data:`BUILDERS`.
    """
    if arch not in BUILDERS:
        raise ValueError(
            f"unknown tiny architecture {arch!r}; valid: {', '.join(sorted(BUILDERS))} "
            "(pass one of these names, or add a builder to lmms_probe_tasks.tiny.BUILDERS)"
        )


def build_tiny(arch: str, out_dir: str | os.PathLike[str], seed: int = 0) -> Path:
    """Build a tiny, randomly initialised checkpoint of a real image-text architecture.

    The folder loads offline with ``transformers.AutoModelForImageTextToText`` and
    ``transformers.AutoProcessor``. The weights are random: use it to test plumbing,
    not to get meaningful scores.

    Args:
        arch: Architecture name, one of :data:`BUILDERS` (e.g. ``"llava"``).
        out_dir: Folder to write; created if missing, existing files are overwritten.
        seed: Torch seed for the weight initialisation; the same seed gives identical weights.

    Returns:
        The checkpoint folder as a :class:`pathlib.Path`.

    Raises:
        ValueError: If ``arch`` is not a known architecture (the message lists the valid names).
        ImportError: If a package in :data:`REQUIREMENTS` for ``arch`` is missing.
    """
    check_arch(arch)
    missing = missing_requirements(arch)
    if missing:
        raise ImportError(
            f"tiny {arch}: its processor needs {', '.join(missing)}, which is not installed "
            f"(pip install {' '.join(missing)})"
        )
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    with single_threaded():
        BUILDERS[arch](path, int(seed))
    return path
