"""The features handed to the user: our streaming safetensors writer against safetensors' own reader."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from lmms_probe_tasks.transport import export_features, write_safetensors


def test_streamed_file_reads_back_with_the_library(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3, 7, 5)).astype(np.float16)
    memmap = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float16, shape=features.shape)
    memmap[:] = features  # the layer-major store may be a memmap
    path = write_safetensors(tmp_path / "out" / "a.safetensors", {"features": memmap, "ids": np.arange(7)}, {"k": "v"})
    loaded = load_file(path)
    np.testing.assert_array_equal(loaded["features"], features)
    np.testing.assert_array_equal(loaded["ids"], np.arange(7))
    with safe_open(str(path), "np") as handle:
        assert handle.metadata() == {"k": "v"}
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_export_features_layout(tmp_path):
    x = np.ones((2, 4, 3), np.float32)
    path = export_features(
        tmp_path / "features" / "task", "language", x, doc_id=np.array([3, 0, 1, 2]),
        is_train=np.array([True, True, False, False]), target=np.array([0, 1, 0, 1]), layers=[0, 5],
        metadata={"task": "task", "site": "language", "class_names": ["a", "b"]},
    )  # fmt: skip
    assert path == tmp_path / "features" / "task" / "language.safetensors"
    t = load_file(path)
    assert t["features"].shape == (2, 4, 3) and t["layer"].tolist() == [0, 5] and t["split"].tolist() == [0, 0, 1, 1]
    with safe_open(str(path), "np") as handle:
        assert json.loads(handle.metadata()["class_names"]) == ["a", "b"]


def test_unexportable_dtype_is_named(tmp_path):
    with pytest.raises(ValueError, match="complex128"):
        write_safetensors(tmp_path / "a.safetensors", {"z": np.zeros(2, complex)}, {})
