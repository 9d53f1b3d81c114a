"""Test-session settings: no hub, and a private feature cache (never the user's ~/.cache)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Tiny models are all overhead: one thread is faster and immune to a busy second core.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# Subprocesses (the CLI tests) inherit these too.
os.environ["LMMS_PROBE_FEATURE_CACHE"] = tempfile.mkdtemp(prefix="lmms_probe_test_cache_")


@pytest.fixture(scope="session")
def trained_llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained tiny LLaVA (full recipe, seed 0) as a checkpoint folder, built once per session.

    Training takes ~2.5 minutes on one thread, so every slow test that needs the trained
    model shares this one folder (read-only: a test must not write into it).
    """
    from lmms_probe_tasks.tiny import build_tiny

    return build_tiny("llava", tmp_path_factory.mktemp("trained") / "tiny-trained-llava", trained=True)
