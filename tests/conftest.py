"""Test-session settings: no hub, and a private feature cache (never the user's ~/.cache)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="module")
def one_torch_thread() -> Any:
    """Tiny matrices: one torch thread is fastest, and far faster on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``checkpoint(arch)`` -> (model, processor, family) of a tiny checkpoint, built and loaded once per session.

    Shared by the family and vision-site tests: they only read the models (no test edits weights).
    """
    import transformers

    from lmms_probe_tasks import tiny
    from lmms_probe_tasks.extract import families

    cache: dict[str, tuple[Any, Any, families.Family]] = {}
    root = tmp_path_factory.mktemp("families")

    def get(arch: str) -> tuple[Any, Any, families.Family]:
        missing = tiny.missing_requirements(arch)
        if missing:
            pytest.skip(f"{arch} needs {', '.join(missing)}")
        if arch not in cache:
            old = os.environ.get("HF_HUB_OFFLINE")
            os.environ["HF_HUB_OFFLINE"] = "1"  # session-scoped: monkeypatch is function-scoped
            try:
                path = tiny.build_tiny(arch, root / arch)
                model = transformers.AutoModelForImageTextToText.from_pretrained(path).eval()
                processor = transformers.AutoProcessor.from_pretrained(path)
            finally:
                if old is None:
                    os.environ.pop("HF_HUB_OFFLINE", None)
                else:
                    os.environ["HF_HUB_OFFLINE"] = old
            cache[arch] = (model, processor, families.lookup(model.config))
        return cache[arch]

    return get
