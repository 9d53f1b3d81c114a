"""Batched probe solvers: agreement with scikit-learn, independence of batching, chunked input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lmms_probe_tasks.fit import (
    MLPConfig,
    encode_targets,
    fit_logreg,
    fit_mlp,
    fit_predict_layers,
    iter_layer_chunks,
    standardize_,
)


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny arrays gain nothing from threads, and OpenMP on an oversubscribed runner is slow.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _planted(n=900, d=24, n_layers=3, n_classes=3, seed=0, dtype=np.float32):
    """Correlated features whose label signal grows with depth."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    x = rng.normal(size=(n_layers, n, d))
    x[:, :, 5:10] += 1.5 * x[:, :, :1]  # correlated block: an ill-conditioned problem
    strength = np.linspace(0.3, 1.5, n_layers)[:, None, None]
    x[:, :, :n_classes] += strength * np.eye(n_classes)[y][None]
    x[:, :, -1] = 3.0  # a constant feature: StandardScaler leaves it unscaled
    is_train = rng.random(n) < 0.7
    return x.astype(dtype), y, is_train


def _sklearn_proba(x_layer, y, is_train, C):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_layer[is_train].astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LogisticRegression(C=C, max_iter=5000, tol=1e-6).fit(scaler.transform(x_layer[is_train]), y[is_train])
    return model.classes_, model.predict_proba(scaler.transform(x_layer[~is_train]))


@pytest.mark.parametrize("n_classes", [2, 3])
def test_agrees_with_sklearn_per_layer(n_classes):
    x, y, is_train = _planted(n_classes=n_classes)
    grid = [0.01, 1.0, 100.0]
    pred = fit_predict_layers(x, y, is_train, kind="multiclass", C=grid, layer_chunk=2)
    labels = pred.predicted_labels()
    assert pred.converged.all()
    for layer in range(x.shape[0]):
        for g, C in enumerate(grid):
            classes, proba = _sklearn_proba(x[layer], y, is_train, C)
            ours = np.mean(labels[layer, g] == y[~is_train])
            theirs = np.mean(classes[proba.argmax(1)] == y[~is_train])
            assert abs(ours - theirs) <= 0.005, (layer, C, ours, theirs)
            # Both solvers stop at a gradient tolerance, so probabilities agree loosely.
            assert np.abs(pred.proba[layer, g] - proba).mean() < 0.01


def test_multilabel_agrees_with_one_vs_rest_sklearn():
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(1)
    n, d, k = 600, 16, 4
    y = (rng.random((n, k)) < 0.3).astype(int)
    x = (rng.normal(size=(2, n, d)) + 1.2 * np.pad(y, ((0, 0), (0, d - k)))[None]).astype(np.float32)
    is_train = np.arange(n) < 420
    pred = fit_predict_layers(x, y, is_train, kind="multilabel", C=0.5)
    for layer in range(2):
        scaler = StandardScaler().fit(x[layer][is_train])
        ovr = OneVsRestClassifier(LogisticRegression(C=0.5, max_iter=5000, tol=1e-6))
        proba = ovr.fit(scaler.transform(x[layer][is_train]), y[is_train]).predict_proba(
            scaler.transform(x[layer][~is_train])
        )
        assert np.mean((pred.proba[layer, 0] > 0.5) == (proba > 0.5)) >= 0.995
        assert np.abs(pred.proba[layer, 0] - proba).mean() < 0.01


def test_layers_and_problems_are_solved_independently():
    x, y, is_train = _planted(n_layers=4)
    enc = encode_targets(y, "multiclass", fit_rows=is_train)
    w = is_train.astype(np.float32)
    chunks = {l0: xs for l0, _, xs in iter_layer_chunks(x, 4, fit_rows=is_train)}
    together = fit_logreg(chunks[0], enc.targets, w, [0.1, 10.0], loss=enc.loss, tol=1e-6)
    for layer in (0, 3):
        xs = chunks[0][layer : layer + 1]
        for g, C in enumerate([0.1, 10.0]):
            alone = fit_logreg(xs, enc.targets, w, C, loss=enc.loss, tol=1e-6)
            np.testing.assert_allclose(together.theta[layer, g].numpy(), alone.theta[0, 0].numpy(), atol=2e-3)


@pytest.mark.parametrize("loss_kind", ["multiclass", "binary", "multilabel"])
def test_preconditioning_changes_the_path_not_the_solution(loss_kind):
    x, y, is_train = _planted(n_classes=2 if loss_kind == "binary" else 3)
    if loss_kind == "multilabel":
        y = np.stack([y == 0, y == 1, y != 2], 1).astype(int)
    enc = encode_targets(y, "multilabel" if loss_kind == "multilabel" else "multiclass", fit_rows=is_train)
    _, _, xs = next(iter_layer_chunks(x, 3, fit_rows=is_train))
    kwargs = dict(loss=enc.loss, tol=1e-5)
    plain = fit_logreg(xs, enc.targets, is_train.astype(np.float32), [0.05, 5.0], precondition=False, **kwargs)
    pre = fit_logreg(xs, enc.targets, is_train.astype(np.float32), [0.05, 5.0], precondition=True, **kwargs)
    np.testing.assert_allclose(pre.theta.numpy(), plain.theta.numpy(), atol=5e-3)
    assert pre.n_iter.sum() < plain.n_iter.sum()


def test_per_problem_targets_and_weights():
    x, y, is_train = _planted()
    enc = encode_targets(y, "multiclass", fit_rows=is_train)
    _, _, xs = next(iter_layer_chunks(x, 3, fit_rows=is_train))
    half = is_train & (np.arange(len(y)) % 2 == 0)
    flipped = enc.targets[:, ::-1].copy()
    packed = fit_logreg(
        xs, np.stack([enc.targets, flipped], 1), np.stack([is_train, half], 1).astype(np.float32), 1.0, loss=enc.loss
    )
    alone = fit_logreg(xs, flipped, half.astype(np.float32), 1.0, loss=enc.loss)
    np.testing.assert_allclose(packed.theta[:, 1].numpy(), alone.theta[:, 0].numpy(), atol=2e-3)


def test_memmap_and_chunk_size_give_the_same_result(tmp_path):
    x, y, is_train = _planted(n_layers=5, dtype=np.float16)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float16, shape=x.shape)
    mm[:] = x
    mm.flush()
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    one = fit_predict_layers(mm, y, is_train, kind="multiclass", layer_chunk=1)
    all_ = fit_predict_layers(x, y, is_train, kind="multiclass", layer_chunk=5)
    np.testing.assert_allclose(one.proba, all_.proba, atol=1e-4)
    assert (one.predicted_labels() == all_.predicted_labels()).mean() > 0.998


def test_chunks_hold_at_most_layer_chunk_layers():
    x, _, is_train = _planted(n_layers=5)
    shapes = [(l0, l1, tuple(xs.shape)) for l0, l1, xs in iter_layer_chunks(x, 2, fit_rows=is_train)]
    assert shapes == [(0, 2, (2, 900, 24)), (2, 4, (2, 900, 24)), (4, 5, (1, 900, 24))]


def test_row_order_yields_those_rows_standardised_on_the_fit_rows():
    from sklearn.preprocessing import StandardScaler

    x, _, is_train = _planted(n_layers=2)
    order = np.concatenate([np.flatnonzero(is_train), np.flatnonzero(~is_train)])
    fit_rows = np.arange(order.size) < is_train.sum()
    _, _, xs = next(iter_layer_chunks(x, 2, fit_rows=fit_rows, row_order=order))
    ref = StandardScaler().fit(x[1][is_train]).transform(x[1][order])
    np.testing.assert_allclose(xs[1].numpy(), ref, atol=1e-4)


def test_standardize_matches_standard_scaler():
    from sklearn.preprocessing import StandardScaler

    x, _, is_train = _planted()
    xs = torch.from_numpy(x.copy())
    standardize_(xs, is_train, row_block=100)
    for layer in range(x.shape[0]):
        ref = StandardScaler().fit(x[layer][is_train]).transform(x[layer])
        np.testing.assert_allclose(xs[layer].numpy(), ref, atol=1e-4)


def test_penalised_intercept_keeps_absent_class_finite():
    x, y, is_train = _planted()
    enc = encode_targets(y, "multiclass", fit_rows=is_train)
    _, _, xs = next(iter_layer_chunks(x, 3, fit_rows=is_train))
    only_two = is_train & (y != 2)  # class 2 never seen: its unpenalised intercept runs off
    model = fit_logreg(xs, enc.targets, only_two.astype(np.float32), 1.0, loss=enc.loss, intercept_C=1.0)
    assert model.converged.all()
    assert torch.isfinite(model.theta).all() and model.theta[..., 2, -1].abs().max() < 20


def test_bad_input_raises_with_the_fix():
    x, y, is_train = _planted()
    enc = encode_targets(y, "multiclass", fit_rows=is_train)
    _, _, xs = next(iter_layer_chunks(x, 3, fit_rows=is_train))
    with pytest.raises(ValueError, match="C must be positive"):
        fit_logreg(xs, enc.targets, is_train.astype(np.float32), -1.0, loss=enc.loss)
    with pytest.raises(ValueError, match=r"problems \[0\] have no training row"):
        fit_logreg(xs, enc.targets, np.zeros(len(y), np.float32), 1.0, loss=enc.loss)
    with pytest.raises(ValueError, match="loss 'probit' is not supported; valid: softmax, sigmoid"):
        fit_logreg(xs, enc.targets, is_train.astype(np.float32), 1.0, loss="probit")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[n_layers, n_docs, hidden\]"):
        next(iter_layer_chunks(x[0], 1, fit_rows=is_train))
    with pytest.raises(ValueError, match="layer_chunk=0"):
        next(iter_layer_chunks(x, 0, fit_rows=is_train))
    bad = x.copy()
    bad[1, 3, 0] = np.inf
    with pytest.raises(ValueError, match=r"layers \[1\] contain NaN or inf"):
        list(iter_layer_chunks(bad, 3, fit_rows=is_train))
    with pytest.raises(ValueError, match="hidden=0"):
        MLPConfig(hidden=0)


def test_mlp_learns_planted_signal_with_early_stopping_and_is_deterministic():
    rng = np.random.default_rng(0)
    n, d = 800, 12
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(2, n, d)).astype(np.float32)
    x[1, :, :3] += 2.5 * np.eye(3)[y]
    is_train = np.arange(n) < 500
    dev = is_train & (np.arange(n) >= 400)
    enc = encode_targets(y, "multiclass", fit_rows=is_train)
    _, _, xs = next(iter_layer_chunks(x, 2, fit_rows=is_train))
    config = MLPConfig(hidden=32, max_epochs=40, patience=4, lr=3e-3)
    model = fit_mlp(xs, enc.targets, is_train & ~dev, dev, loss=enc.loss, config=config, seed=3)
    test = np.flatnonzero(~is_train)
    acc = (model.logits(xs, test).argmax(-1).numpy() == y[test]).mean(1)
    assert acc[1] > 0.85 and acc[0] < 0.5
    assert (model.best_epoch >= 1).all() and (model.best_epoch <= config.max_epochs).all()
    again = fit_mlp(xs, enc.targets, is_train & ~dev, dev, loss=enc.loss, config=config, seed=3)
    assert torch.equal(model.w1, again.w1)
    with pytest.raises(ValueError, match="overlap"):
        fit_mlp(xs, enc.targets, is_train, dev, loss=enc.loss, config=config)
