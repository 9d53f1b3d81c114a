"""Batched logistic regression: agreement with scikit-learn, independence of batching, preconditioning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lmms_probe_tasks.probe.features import iter_layer_chunks
from lmms_probe_tasks.probe.logreg import fit_logreg
from lmms_probe_tasks.probe.targets import encode_targets
from tests.probe_fixtures import fit_predict, one_thread, planted_layers  # noqa: F401  (one_thread: autouse)


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
    x, y, is_train = planted_layers(n_classes=n_classes)
    grid = [0.01, 1.0, 100.0]
    proba_all, classes_all, converged = fit_predict(x, y, is_train, kind="multiclass", C=grid, layer_chunk=2)
    labels = classes_all[proba_all.argmax(-1)]
    assert converged.all()
    for layer in range(x.shape[0]):
        for g, C in enumerate(grid):
            classes, proba = _sklearn_proba(x[layer], y, is_train, C)
            ours = np.mean(labels[layer, g] == y[~is_train])
            theirs = np.mean(classes[proba.argmax(1)] == y[~is_train])
            assert abs(ours - theirs) <= 0.005, (layer, C, ours, theirs)
            # Both solvers stop at a gradient tolerance, so probabilities agree loosely.
            assert np.abs(proba_all[layer, g] - proba).mean() < 0.01


def test_multilabel_agrees_with_one_vs_rest_sklearn():
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(1)
    n, d, k = 600, 16, 4
    y = (rng.random((n, k)) < 0.3).astype(int)
    x = (rng.normal(size=(2, n, d)) + 1.2 * np.pad(y, ((0, 0), (0, d - k)))[None]).astype(np.float32)
    is_train = np.arange(n) < 420
    ours, _, _ = fit_predict(x, y, is_train, kind="multilabel", C=0.5)
    for layer in range(2):
        scaler = StandardScaler().fit(x[layer][is_train])
        ovr = OneVsRestClassifier(LogisticRegression(C=0.5, max_iter=5000, tol=1e-6))
        proba = ovr.fit(scaler.transform(x[layer][is_train]), y[is_train]).predict_proba(
            scaler.transform(x[layer][~is_train])
        )
        assert np.mean((ours[layer, 0] > 0.5) == (proba > 0.5)) >= 0.995
        assert np.abs(ours[layer, 0] - proba).mean() < 0.01


def test_layers_and_problems_are_solved_independently():
    x, y, is_train = planted_layers(n_layers=4)
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
    x, y, is_train = planted_layers(n_classes=2 if loss_kind == "binary" else 3)
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
    x, y, is_train = planted_layers()
    enc = encode_targets(y, "multiclass", fit_rows=is_train)
    _, _, xs = next(iter_layer_chunks(x, 3, fit_rows=is_train))
    half = is_train & (np.arange(len(y)) % 2 == 0)
    flipped = enc.targets[:, ::-1].copy()
    packed = fit_logreg(
        xs, np.stack([enc.targets, flipped], 1), np.stack([is_train, half], 1).astype(np.float32), 1.0, loss=enc.loss
    )
    alone = fit_logreg(xs, flipped, half.astype(np.float32), 1.0, loss=enc.loss)
    np.testing.assert_allclose(packed.theta[:, 1].numpy(), alone.theta[:, 0].numpy(), atol=2e-3)


def test_penalised_intercept_keeps_absent_class_finite():
    x, y, is_train = planted_layers()
    enc = encode_targets(y, "multiclass", fit_rows=is_train)
    _, _, xs = next(iter_layer_chunks(x, 3, fit_rows=is_train))
    only_two = is_train & (y != 2)  # class 2 never seen: its unpenalised intercept runs off
    model = fit_logreg(xs, enc.targets, only_two.astype(np.float32), 1.0, loss=enc.loss, intercept_C=1.0)
    assert model.converged.all()
    assert torch.isfinite(model.theta).all() and model.theta[..., 2, -1].abs().max() < 20


def test_bad_input_raises_with_the_fix():
    x, y, is_train = planted_layers()
    enc = encode_targets(y, "multiclass", fit_rows=is_train)
    _, _, xs = next(iter_layer_chunks(x, 3, fit_rows=is_train))
    with pytest.raises(ValueError, match="C must be positive"):
        fit_logreg(xs, enc.targets, is_train.astype(np.float32), -1.0, loss=enc.loss)
    with pytest.raises(ValueError, match=r"problems \[0\] have no training row"):
        fit_logreg(xs, enc.targets, np.zeros(len(y), np.float32), 1.0, loss=enc.loss)
    with pytest.raises(ValueError, match="loss 'probit' is not supported; valid: softmax, sigmoid"):
        fit_logreg(xs, enc.targets, is_train.astype(np.float32), 1.0, loss="probit")  # type: ignore[arg-type]
