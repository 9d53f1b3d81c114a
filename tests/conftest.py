"""Test-session settings: no hub, and a private feature cache (never the user's ~/.cache)."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Tiny models are all overhead: one thread is faster and immune to a busy second core.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# Subprocesses (the CLI tests) inherit these too.
os.environ["LMMS_PROBE_FEATURE_CACHE"] = tempfile.mkdtemp(prefix="lmms_probe_test_cache_")
