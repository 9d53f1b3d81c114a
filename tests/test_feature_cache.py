"""The content-addressed feature cache: integrity, resume, re-probing without the weights."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import numpy as np
import pytest
from lmms_eval.evaluator import simple_evaluate
from lmms_eval.tasks import TaskManager

from lmms_probe_tasks.transport.feature_cache import FeatureCache, doc_key, image_digest, open_cache, read_verified


def test_roundtrip_is_atomic_and_checksummed(tmp_path):
    cache = FeatureCache(tmp_path)
    array = np.arange(12, dtype=np.float16).reshape(3, 4)
    path = cache.put("ab" * 32, array)
    np.testing.assert_array_equal(cache.get("ab" * 32), array)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0xFF
    path.write_bytes(bytes(blob))
    assert cache.get("ab" * 32) is None and cache.stats["corrupt"] == 1


def test_read_verified_refuses_a_corrupt_file_and_open_cache_reads_the_arg(tmp_path, monkeypatch):
    path = FeatureCache(tmp_path).put("12" * 32, np.ones((2, 3), np.float16))
    np.testing.assert_array_equal(read_verified(path), np.ones((2, 3), np.float16))
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="fails its checksum"):
        read_verified(path)
    assert all(open_cache(v) is None for v in (None, "none", "off", "False", ""))
    assert open_cache(str(tmp_path / "c")).root == tmp_path / "c"
    monkeypatch.setenv("LMMS_PROBE_FEATURE_CACHE", str(tmp_path / "env"))
    assert open_cache("default").root == tmp_path / "env"


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_unwritable_cache_turns_itself_off_once(tmp_path, monkeypatch, err):
    import tempfile

    cache = FeatureCache(tmp_path)

    def fail(*args, **kwargs):
        raise OSError(err, "simulated")

    # Simulated: the tests run as root, for whom chmod does not make a folder read-only.
    monkeypatch.setattr(tempfile, "mkstemp", fail)
    assert cache.put("cd" * 32, np.zeros((2, 2), np.float16)) is None
    assert cache.put("ef" * 32, np.zeros((2, 2), np.float16)) is None
    assert cache.stats["write_errors"] == 1 and not list(tmp_path.rglob("*.npy"))


def test_keys_change_with_everything_that_changes_features():
    from PIL import Image

    red, blue = Image.new("RGB", (4, 4), "red"), Image.new("RGB", (4, 4), "blue")
    base = {"model": "m", "pooling": "last"}
    key = doc_key(base, "prompt", image_digest([red]))
    assert key == doc_key(dict(base), "prompt", image_digest([red.copy()]))
    assert key != doc_key(base, "prompt!", image_digest([red]))
    assert key != doc_key({**base, "pooling": "mean"}, "prompt", image_digest([red]))
    assert key != doc_key({**base, "model": "other"}, "prompt", image_digest([red]))
    assert key != doc_key(base, "prompt", image_digest([blue]))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from lmms_probe_tasks.tiny import build_tiny

    return build_tiny("llava", tmp_path_factory.mktemp("fc") / "llava")


def _run(ckpt: Path, cache: Path):
    from lmms_probe_tasks.models.hidden_states import HiddenStates

    model = HiddenStates(pretrained=str(ckpt), feature_cache=str(cache), batch_size=4)
    out = simple_evaluate(
        model=model,
        tasks=["probe_shapes_entailment"],
        task_manager=TaskManager("ERROR", include_defaults=False),
        limit=60,
        log_samples=False,
    )
    rows = {k: v for k, v in out["results"]["probe_shapes_entailment"].items() if "stderr" not in k and k != "alias"}
    return rows, model


def test_reprobing_needs_no_weights_and_corrupt_shards_are_recomputed(tiny, tmp_path):
    cache, ckpt = tmp_path / "cache", tmp_path / "ckpt"
    shutil.copytree(tiny, ckpt)
    first, model = _run(ckpt, cache)
    assert model.meta["feature_cache"]["computed"] == 60
    for weights in ckpt.glob("*.safetensors"):
        weights.unlink()
    second, model = _run(ckpt, cache)
    assert second == first and model._model is None  # every doc cached: the weights were never loaded
    assert model.meta["feature_cache"]["stats"]["hits"] == 60

    shard = sorted(cache.rglob("*.npy"))[7]
    blob = bytearray(shard.read_bytes())
    blob[40] ^= 0xFF
    shard.write_bytes(bytes(blob))
    shutil.copytree(tiny, ckpt, dirs_exist_ok=True)  # weights back: one shard must be recomputed
    third, model = _run(ckpt, cache)
    stats = model.meta["feature_cache"]["stats"]
    assert third == first and stats["corrupt"] == 1 and model.meta["feature_cache"]["computed"] == 1


def test_another_model_never_reuses_features(tiny, tmp_path):
    from lmms_probe_tasks.tiny import build_tiny

    cache = tmp_path / "cache"
    _run(tiny, cache)
    other = build_tiny("llava", tmp_path / "other", seed=3)
    _, model = _run(other, cache)
    assert model.meta["feature_cache"]["stats"]["hits"] == 0 and model.meta["feature_cache"]["computed"] == 60
