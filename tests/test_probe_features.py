"""Feature chunks: at most ``layer_chunk`` layers in float32, standardised as StandardScaler, memmap-safe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmms_probe_tasks.probe.features import iter_layer_chunks, standardize_
from tests.probe_fixtures import fit_predict, one_thread, planted_layers  # noqa: F401  (one_thread: autouse)


def test_memmap_and_chunk_size_give_the_same_result(tmp_path):
    x, y, is_train = planted_layers(n_layers=5, dtype=np.float16)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float16, shape=x.shape)
    mm[:] = x
    mm.flush()
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    one, classes, _ = fit_predict(mm, y, is_train, kind="multiclass", layer_chunk=1)
    all_, _, _ = fit_predict(x, y, is_train, kind="multiclass", layer_chunk=5)
    np.testing.assert_allclose(one, all_, atol=1e-4)
    assert (classes[one.argmax(-1)] == classes[all_.argmax(-1)]).mean() > 0.998


def test_chunks_hold_at_most_layer_chunk_layers():
    x, _, is_train = planted_layers(n_layers=5)
    shapes = [(l0, l1, tuple(xs.shape)) for l0, l1, xs in iter_layer_chunks(x, 2, fit_rows=is_train)]
    assert shapes == [(0, 2, (2, 900, 24)), (2, 4, (2, 900, 24)), (4, 5, (1, 900, 24))]


def test_row_order_yields_those_rows_standardised_on_the_fit_rows():
    from sklearn.preprocessing import StandardScaler

    x, _, is_train = planted_layers(n_layers=2)
    order = np.concatenate([np.flatnonzero(is_train), np.flatnonzero(~is_train)])
    fit_rows = np.arange(order.size) < is_train.sum()
    _, _, xs = next(iter_layer_chunks(x, 2, fit_rows=fit_rows, row_order=order))
    ref = StandardScaler().fit(x[1][is_train]).transform(x[1][order])
    np.testing.assert_allclose(xs[1].numpy(), ref, atol=1e-4)


def test_standardize_matches_standard_scaler():
    from sklearn.preprocessing import StandardScaler

    x, _, is_train = planted_layers()
    xs = torch.from_numpy(x.copy())
    standardize_(xs, is_train, row_block=100)
    for layer in range(x.shape[0]):
        ref = StandardScaler().fit(x[layer][is_train]).transform(x[layer])
        np.testing.assert_allclose(xs[layer].numpy(), ref, atol=1e-4)


def test_bad_input_raises_with_the_fix():
    x, _, is_train = planted_layers()
    with pytest.raises(ValueError, match=r"\[n_layers, n_docs, hidden\]"):
        next(iter_layer_chunks(x[0], 1, fit_rows=is_train))
    with pytest.raises(ValueError, match="layer_chunk=0"):
        next(iter_layer_chunks(x, 0, fit_rows=is_train))
    bad = x.copy()
    bad[1, 3, 0] = np.inf
    with pytest.raises(ValueError, match=r"layers \[1\] contain NaN or inf"):
        list(iter_layer_chunks(bad, 3, fit_rows=is_train))
