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


def test_reprobing_needs_no_weights_and_corrupt_shards_are_recomputed(tiny, tmp_path, monkeypatch):
    from lmms_probe_tasks.models import hidden_states

    cache, ckpt = tmp_path / "cache", tmp_path / "ckpt"
    shutil.copytree(tiny, ckpt)
    first, model = _run(ckpt, cache)
    assert model.meta["feature_cache"]["computed"] == 60
    assert model.meta["weights"]["source"] == "local" and model.meta["weights"]["folder"] == str(ckpt.resolve())

    def no_load(*args, **kwargs):
        raise AssertionError("the weights were loaded for a fully cached re-probe")

    with monkeypatch.context() as patch:
        patch.setattr(hidden_states, "load_weights", no_load)
        second, model = _run(ckpt, cache)
    assert second == first and model._model is None  # every doc cached: the weights were never loaded
    assert model.meta["feature_cache"]["stats"]["hits"] == 60

    shard = sorted(cache.rglob("*.npy"))[7]
    blob = bytearray(shard.read_bytes())
    blob[40] ^= 0xFF
    shard.write_bytes(bytes(blob))
    third, model = _run(ckpt, cache)
    stats = model.meta["feature_cache"]["stats"]
    assert third == first and stats["corrupt"] == 1 and model.meta["feature_cache"]["computed"] == 1


def test_a_folder_without_weights_fails_at_start_naming_it(tiny, tmp_path):
    from lmms_probe_tasks.models.hidden_states import HiddenStates

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny, ckpt)
    for weights in ckpt.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ValueError, match=f"checkpoint folder {ckpt.resolve()} holds no weight file"):
        HiddenStates(pretrained=str(ckpt), feature_cache=str(tmp_path / "cache"))
    assert not (tmp_path / "cache").exists()


def test_other_weights_saved_into_the_same_folder_are_recomputed(tiny, tmp_path):
    from lmms_probe_tasks.tiny import build_tiny

    cache, ckpt = tmp_path / "cache", tmp_path / "ckpt"
    shutil.copytree(tiny, ckpt)
    first, _ = _run(ckpt, cache)
    build_tiny("llava", ckpt, seed=1)  # same names, sizes and config: only the values differ
    second, model = _run(ckpt, cache)
    assert model.meta["feature_cache"]["stats"]["hits"] == 0 and model.meta["feature_cache"]["computed"] == 60
    reference, _ = _run(ckpt, "none")
    assert second == reference


def test_same_relative_path_in_two_projects_never_collides(tiny, tmp_path, monkeypatch):
    from lmms_probe_tasks.tiny import build_tiny

    cache = tmp_path / "cache"
    shutil.copytree(tiny, tmp_path / "a" / "tiny")
    build_tiny("llava", tmp_path / "b" / "tiny", seed=1)
    monkeypatch.chdir(tmp_path / "a")
    _run(Path("./tiny"), cache)
    monkeypatch.chdir(tmp_path / "b")
    _, model = _run(Path("./tiny"), cache)
    assert model.meta["feature_cache"]["stats"]["hits"] == 0


def test_weights_fingerprint_is_cheap_and_sees_a_rewrite_with_the_same_mtime(tmp_path):
    import os

    from lmms_probe_tasks.extract.weights_id import folder_fingerprint

    weights = tmp_path / "model.safetensors"
    header = b'{"w":{"dtype":"F32","shape":[262144],"data_offsets":[0,1048576]}}'
    weights.write_bytes(len(header).to_bytes(8, "little") + header + bytes(1 << 20))
    (tmp_path / "training_args.bin").write_bytes(b"x")
    before = folder_fingerprint(tmp_path)
    assert before["files"] == 1 and before["folder"] == str(tmp_path.resolve())
    stat = weights.stat()
    blob = bytearray(weights.read_bytes())
    blob[-10] = 1  # a changed value in the last sample, size and mtime kept
    weights.write_bytes(bytes(blob))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert folder_fingerprint(tmp_path)["sha256"] != before["sha256"]


def test_hub_ids_key_on_the_commit_their_revision_resolves_to(tmp_path, monkeypatch):
    from lmms_probe_tasks.extract.weights_id import weights_identity

    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--m"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    (repo / "snapshots" / sha).mkdir(parents=True)
    (repo / "snapshots" / sha / "config.json").write_text("{}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert weights_identity("org/m", "main", object(), "pretrained") == {
        "source": "hub",
        "repo": "org/m",
        "commit": sha,
    }
    assert weights_identity("org/other", "main", object(), "pretrained") is None  # unknown: the cache goes off


def test_another_model_never_reuses_features(tiny, tmp_path):
    from lmms_probe_tasks.tiny import build_tiny

    cache = tmp_path / "cache"
    _run(tiny, cache)
    other = build_tiny("llava", tmp_path / "other", seed=3)
    _, model = _run(other, cache)
    assert model.meta["feature_cache"]["stats"]["hits"] == 0 and model.meta["feature_cache"]["computed"] == 60


def test_massive_activations_stay_finite_and_precise_and_nan_is_refused(tmp_path):
    from lmms_probe_tasks.transport import compact, layer_major

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 64)).astype(np.float32) * np.array([[1.0], [1e6], [1e37]], np.float32)
    path = FeatureCache(tmp_path).put("aa" * 32, x)
    back = read_verified(path)
    assert back.dtype == np.float32 and np.isfinite(back).all()
    peak = np.abs(x).max(axis=1, keepdims=True)
    assert (np.abs(back - x) <= 2**-11 * peak).all()
    small = compact(rng.normal(size=(3, 64)).astype(np.float32))
    assert small.dtype == np.float16  # the common case stays half the memory
    stacked = layer_major([{"x": small}, {"x_path": str(path)}, {"x": small}])
    assert stacked.dtype == np.float32 and np.array_equal(stacked[:, 1], back)
    np.testing.assert_array_equal(stacked[:, 0], small.astype(np.float32))
    with pytest.raises(ValueError, match=r"rows \[1\] are NaN or inf"):
        FeatureCache(tmp_path).put("bb" * 32, np.array([[1.0], [np.inf]], np.float32))
    assert not FeatureCache(tmp_path).path("bb" * 32).exists()
