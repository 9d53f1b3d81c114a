"""Runs the full probing protocol on all layers at once: dev split, L2 choice, seeds, CIs, controls, MDL.

Pure functions on arrays (no model, no lmms-eval). :func:`run_protocol` takes a task's
features of every layer, ``x`` ``[n_layers, n, d]``, and returns a
:class:`ProtocolResult` with one row per layer. The protocol follows SentEval and
the probing literature (see ``shared/notes/data-and-models.md``, "Probing practice"):

1. **Dev split.** For each of ``n_seeds`` seeds, a dev split of ``dev_fraction`` of
   probe-train is carved out by *group* (e.g. image id), so no group is in both.
2. **L2 choice (linear probe).** For every layer, seed and label set, logistic
   regression is fitted on train-minus-dev for every ``C`` of ``c_grid`` (all in one
   batched solve, see :mod:`lmms_probe_tasks.probe.logreg`); the ``C`` with the best dev
   metric wins (ties: lower dev log-loss, then smaller ``C``).
3. **Refit and score.** With ``refit="train+dev"`` (default) the chosen ``C`` is
   refitted on all probe-train rows, as scikit-learn's ``GridSearchCV(refit=True)``;
   ``refit="train"`` keeps train-minus-dev. The refit is scored on probe-test.
   The **MLP probe** (``probe="mlp"``) is trained on train-minus-dev with early
   stopping on dev (its regulariser) and is not refitted.
4. **Seeds.** A seed sets the dev split, the control labels, the label shuffle and
   the MLP's initialisation. Scores are the mean over seeds, ``score_std`` their
   standard deviation (NaN with one seed).
5. **Bootstrap.** Probe-test docs (or, with ``bootstrap_unit="group"``, their
   groups) are resampled ``n_bootstrap`` times; each resample rescores the stored
   test predictions (no refits), averaged over seeds. The percentile interval is the
   CI; the argmax layer of each resample (ties split) gives ``best_layer_prob``.
6. **Controls.** Control task (Hewitt & Liang 2019): every *type* (``types``, e.g.
   the hypothesis text or image id) gets a label drawn from the empirical
   probe-train label distribution, fixed per type; ``selectivity = score -
   control_score``. Shuffled control: probe-train labels are permuted, probe-test
   keeps its real labels. Majority baseline: the most frequent probe-train class
   (multilabel: a constant score, whose AP is the class prevalence); no fit.
7. **MDL.** Online codelength (Voita & Titov 2020) of the probe-train labels in a
   seeded random order, blocks at 0.1 ... 100 % of probe-train, the first block with
   the uniform code; every block model is the linear probe with the layer's chosen
   ``C`` (seed 0; ``mdl_C`` overrides) and, to keep classes unseen in a small block
   finite, a penalised intercept. ``compression = uniform / online`` codelength.

Metrics: multiclass accuracy (headline) and macro-F1; multilabel mAP over the
classes with at least one positive in probe-test. When the data cannot support a
probe every score is NaN and ``reason`` says why (:func:`~lmms_probe_tasks.probe.targets.unusable_reason`).

The steps live in sibling modules (controls, selection, mlp, metrics, bootstrap, mdl,
result); this module only sequences them over chunks of layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lmms_probe_tasks.probe.config import STREAM_MDL, STREAM_MLP, ProtocolConfig
from lmms_probe_tasks.probe.controls import FitSet, FitSets, build_fit_sets
from lmms_probe_tasks.probe.features import iter_layer_chunks
from lmms_probe_tasks.probe.inputs import Docs, check_inputs
from lmms_probe_tasks.probe.logreg import fit_logreg, problem_batches
from lmms_probe_tasks.probe.mdl import mdl_block_ends, online_codelengths, two_part_codelength, uniform_codelength
from lmms_probe_tasks.probe.metrics import layer_scores, macro_f1, majority_baseline
from lmms_probe_tasks.probe.mlp import fit_mlp
from lmms_probe_tasks.probe.result import LayerArrays, ProtocolResult, build_result, unscored_result
from lmms_probe_tasks.probe.selection import choose_C
from lmms_probe_tasks.probe.targets import (
    EncodedTargets,
    TargetKind,
    encode_targets,
    predict,
)
from lmms_probe_tasks.probe.uncertainty import at_grid_edge, half_masks, uncertainty


def run_protocol(
    x: np.ndarray,
    y: np.ndarray,
    is_train: np.ndarray,
    *,
    kind: TargetKind,
    config: ProtocolConfig | None = None,
    groups: np.ndarray | Sequence[Any] | None = None,
    types: np.ndarray | Sequence[Any] | None = None,
    layer_ids: Sequence[int] | None = None,
) -> ProtocolResult:
    """Probe every layer under the full protocol (see the module docstring).

    Args:
        x: ``[n_layers, n, d]`` features, float16 or float32 (ndarray or ``numpy.memmap``;
            read ``config.layer_chunk`` layers at a time, never copied whole to float32).
        y: ``[n]`` int class ids (multiclass) or ``[n, k]`` 0/1 indicators (multilabel).
        is_train: ``[n]`` bool, True for probe-train docs, False for probe-test.
        kind: ``multiclass`` or ``multilabel``.
        config: Settings (default: the ``paper`` preset).
        groups: ``[n]`` group keys (str/int, e.g. image id) for a group-disjoint dev
            split and the group bootstrap; None: every doc its own group.
        types: ``[n]`` type keys of the control task (e.g. hypothesis text or image id);
            None: no control task.
        layer_ids: Ids of ``x``'s layers (default ``0..n_layers-1``).

    Returns:
        The per-layer results.

    Raises:
        ValueError: Inputs of the wrong shape or dtype, or an invalid config.
    """
    config = config or ProtocolConfig()
    y, is_train, groups, types, layers = check_inputs(x, y, is_train, kind, groups, types, layer_ids)
    docs = Docs.train_first(y, is_train, groups, types)
    reason = docs.unusable_reason(kind) or docs.evidence_reason(kind, config.min_test_docs, config.min_class_docs)
    if reason is not None:
        return unscored_result(kind, config, layers, docs.n_train, docs.n_test, reason)
    notes = docs.overlap_notes()
    enc = encode_targets(docs.y, kind, fit_rows=docs.is_train)
    fit_sets = build_fit_sets(
        docs.y, docs.is_train, docs.groups, docs.types, kind=kind, classes=enc.classes, config=config
    )
    notes += fit_sets.notes
    if config.probe == "mlp" and fit_sets.fallback_seeds:
        return unscored_result(kind, config, layers, docs.n_train, docs.n_test, "; ".join(notes))
    if config.probe == "linear" and fit_sets.fallback_seeds:
        notes.append("those seeds use the C that wins on the other seeds' dev splits where possible, else C=1.0")
    if config.probe == "mlp" and config.mdl:
        notes.append("MDL codelength uses the linear probe (the code's own choice of C); the MLP probe has none")
    halves = half_masks(docs, config)
    fits = _fit_layers(x, docs, fit_sets, halves, enc, kind, config)
    return _summarise(kind, config, layers, docs, fit_sets, fits, enc, notes)


@dataclass
class _Fits:
    """What the fits of all layers leave behind (``L`` layers, ``P`` label sets, ``S`` seeds), filled chunk by chunk.

    Attributes:
        task_pred: ``[S, L, n_test]`` predicted class ids or ``[S, L, n_test, k]`` float32 scores.
        set_scores: ``[P, L]`` probe-test metric of every label set.
        chosen: ``[P, L]`` chosen C (NaN for the MLP probe).
        converged: ``[P, L]`` bool, the refit met the solver tolerance.
        mdl_bits: ``[L]`` online codelength, two-part when C is chosen by it (NaN without MDL).
        mdl_c: ``[L]`` C of the MDL block models.
        half_pred: ``[R, L, n_test]`` (or ``[R, L, n_test, k]``) predictions of the half-sample refits.
        layer_reason: ``[L]`` why a layer could not be probed ("" when it could).
    """

    task_pred: np.ndarray
    set_scores: np.ndarray
    chosen: np.ndarray
    converged: np.ndarray
    mdl_bits: np.ndarray
    mdl_c: np.ndarray
    half_pred: np.ndarray
    layer_reason: list[str]

    @classmethod
    def empty(cls, n_sets: int, n_halves: int, n_layers: int, docs: Docs, kind: TargetKind, n_seeds: int) -> _Fits:
        """All scores NaN, nothing chosen, every layer probeable until shown otherwise."""
        pred_shape = (n_layers, docs.n_test) if kind == "multiclass" else (n_layers, docs.n_test, docs.y.shape[1])
        dtype = docs.y.dtype if kind == "multiclass" else np.float32
        nan = np.full((n_sets, n_layers), np.nan)
        return cls(
            np.zeros((n_seeds, *pred_shape), dtype), nan, nan.copy(), np.ones((n_sets, n_layers), bool),
            np.full(n_layers, np.nan), np.full(n_layers, np.nan), np.zeros((n_halves, *pred_shape), dtype),
            [""] * n_layers,
        )  # fmt: skip


def _fit_layers(
    x: np.ndarray,
    docs: Docs,
    fit_sets: FitSets,
    halves: np.ndarray,
    enc: EncodedTargets,
    kind: TargetKind,
    config: ProtocolConfig,
) -> _Fits:
    """Fit and score every label set on every layer, ``config.layer_chunk`` layers at a time.

    A layer that cannot be probed (NaN or inf features; a fit that fails) gets a reason
    instead of stopping the run: every other layer is still scored.
    """
    n_layers = x.shape[0]
    fits = _Fits.empty(len(fit_sets.sets), len(halves), n_layers, docs, kind, config.n_seeds)
    mdl_order = np.random.default_rng((config.seed, 0, STREAM_MDL)).permutation(np.flatnonzero(docs.is_train))
    bad: list[int] = []
    chunks = iter_layer_chunks(
        x, config.layer_chunk, fit_rows=docs.is_train, device=config.device, row_order=docs.row_order, bad_layers=bad
    )
    for l0, l1, xs in chunks:
        try:
            _fit_chunk(fits, l0, l1, xs, docs, fit_sets, halves, enc, kind, config, mdl_order)
        except (RuntimeError, ValueError, ArithmeticError) as exc:  # numerical trouble in these layers only
            for i in range(l0, l1):
                fits.layer_reason[i] = f"the fit failed: {type(exc).__name__}: {str(exc)[:200]}"
        del xs
    for i in bad:
        fits.layer_reason[i] = "NaN or inf features: this layer is not probed (see the extraction log)"
    for i, why in enumerate(fits.layer_reason):
        if why:
            fits.set_scores[:, i] = fits.mdl_bits[i] = fits.mdl_c[i] = np.nan
            fits.converged[:, i] = False
    return fits


def _fit_chunk(
    fits: _Fits,
    l0: int,
    l1: int,
    xs: torch.Tensor,
    docs: Docs,
    fit_sets: FitSets,
    halves: np.ndarray,
    enc: EncodedTargets,
    kind: TargetKind,
    config: ProtocolConfig,
    mdl_order: np.ndarray,
) -> None:
    """Fit and score every label set on layers ``l0:l1`` (``xs``, all rows, probe-train first) into ``fits``."""
    sets, n_train = fit_sets.sets, docs.n_train
    xs_train = xs[:, :n_train]  # a view: train rows come first
    if config.probe == "linear":
        c_sel = choose_C(xs_train, sets, fit_sets.fallback_seeds, enc, config)
        preds, conv = _refit(xs, sets, enc, n_train, c_sel, config)
        fits.chosen[:, l0:l1] = c_sel
        fits.converged[:, l0:l1] = conv
        if len(halves):
            fits.half_pred[:, l0:l1] = _refit_halves(xs, sets[0], halves, enc, n_train, c_sel[0], config)
    else:
        preds = _fit_mlps(xs, sets, enc, n_train, config)
        if len(halves):
            fits.half_pred[:, l0:l1] = np.stack(_fit_mlps(xs, [sets[0]] * len(halves), enc, n_train, config, halves))
    for j, fs in enumerate(sets):
        if fs.name == "task":
            fits.task_pred[fs.seed_index, l0:l1] = preds[j]
        # Each label set is scored on its own test labels (control labels for the control task).
        fits.set_scores[j, l0:l1] = layer_scores(preds[j], fs.labels[n_train:], kind)
    if config.mdl:
        c_values = np.asarray(config.c_grid if config.mdl_C is None else (config.mdl_C,))
        bits = online_codelengths(xs_train, enc, docs.y, mdl_order, mdl_block_ends(n_train), c_values, config)
        fits.mdl_bits[l0:l1], fits.mdl_c[l0:l1] = two_part_codelength(bits, c_values, uniform_codelength(n_train, enc))


def _fit_mlps(
    xs: torch.Tensor,
    sets: list[FitSet],
    enc: EncodedTargets,
    n_train: int,
    config: ProtocolConfig,
    halves: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Train an MLP probe per set on train-minus-dev (early-stopped on dev) and predict probe-test.

    ``xs`` holds all rows, probe-train first (``n_train`` of them). With ``halves``
    (``[len(sets), n_train]``), set ``j`` trains on its train rows within half ``j`` only.
    """
    preds = []
    for j, fs in enumerate(sets):
        mlp_seed = int(np.random.default_rng((config.seed, fs.seed_index, STREAM_MLP)).integers(2**31))
        train = fs.train[:n_train] if halves is None else fs.train[:n_train] & halves[j]
        model = fit_mlp(
            xs[:, :n_train], fs.targets[:n_train], train, fs.dev[:n_train],
            loss=enc.loss, config=config.mlp, seed=mlp_seed,
        )  # fmt: skip
        preds.append(predict(model.logits(xs[:, n_train:]), enc))
    return preds


def _refit(
    xs: torch.Tensor,
    sets: list[FitSet],
    enc: EncodedTargets,
    n_train: int,
    chosen_c: np.ndarray,
    config: ProtocolConfig,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Refit every set with its C (``chosen_c``, ``[n_sets, l]``) and predict probe-test.

    ``xs`` holds all rows, probe-train first (``n_train`` of them).

    Returns:
        ``(test predictions per set, converged [n_sets, l])``.
    """
    nl = xs.shape[0]
    preds: list[np.ndarray] = [np.empty(0)] * len(sets)
    converged = np.zeros((len(sets), nl), bool)
    all_train = np.ones(n_train, bool)
    for batch in problem_batches(len(sets), nl, n_train, enc.targets.shape[1], config.batch_mb):
        rows = [all_train if config.refit == "train+dev" else sets[j].train[:n_train] for j in batch]
        model = fit_logreg(
            xs[:, :n_train],
            np.stack([sets[j].targets[:n_train] for j in batch], axis=1),
            np.stack(rows, axis=1).astype(np.float32),
            chosen_c[list(batch)].T,
            loss=enc.loss,
            max_iter=config.max_iter,
            tol=config.tol,
        )
        z = model.logits(xs[:, n_train:])  # [l, n_test, P, K]
        for p, j in enumerate(batch):
            preds[j] = predict(z[:, :, p], enc)
            converged[j] = model.converged[:, p]
    return preds, converged


def _refit_halves(
    xs: torch.Tensor,
    task: FitSet,
    halves: np.ndarray,
    enc: EncodedTargets,
    n_train: int,
    task_c: np.ndarray,
    config: ProtocolConfig,
) -> np.ndarray:
    """Refit the task probe (seed 0's C, ``[l]``) on each half of probe-train and predict probe-test.

    Returns:
        ``[R, l, n_test]`` class ids or ``[R, l, n_test, k]`` scores (R = ``len(halves)``).
    """
    nl = xs.shape[0]
    out = []
    for batch in problem_batches(len(halves), nl, n_train, enc.targets.shape[1], config.batch_mb):
        model = fit_logreg(
            xs[:, :n_train], task.targets[:n_train], halves[list(batch)].T.astype(np.float32),
            np.broadcast_to(task_c[:, None], (nl, len(batch))), loss=enc.loss, max_iter=config.max_iter,
            tol=config.tol,
        )  # fmt: skip
        z = model.logits(xs[:, n_train:])  # [l, n_test, R, K]
        out.extend(predict(z[:, :, p], enc) for p in range(len(batch)))
    return np.stack(out)


def _summarise(
    kind: TargetKind,
    config: ProtocolConfig,
    layers: tuple[int, ...],
    docs: Docs,
    fit_sets: FitSets,
    fits: _Fits,
    enc: EncodedTargets,
    notes: list[str],
) -> ProtocolResult:
    """Average the per-set scores over seeds, add intervals, best-layer odds and baselines, build the result."""
    sets, n_layers = fit_sets.sets, len(layers)
    y_test = docs.y[~docs.is_train]

    def mean_of(name: str) -> np.ndarray:
        rows = [j for j, fs in enumerate(sets) if fs.name == name]
        return fits.set_scores[rows].mean(0) if rows else np.full(n_layers, np.nan)

    task_rows = [j for j, fs in enumerate(sets) if fs.name == "task"]
    task = fits.set_scores[task_rows]  # [S, L]
    if kind == "multiclass":
        f1 = np.array(
            [[macro_f1(y_test, fits.task_pred[s, layer]) for layer in range(n_layers)] for s in range(len(task_rows))]
        )
        macro = f1.mean(0)
    else:
        macro = np.full(n_layers, np.nan)
    score = task.mean(0)
    spread = uncertainty(fits.task_pred, fits.half_pred, y_test, docs, kind, config, score, notes)
    unprobed = np.array([bool(why) for why in fits.layer_reason])
    if unprobed.any():  # a layer that could not be probed has no number of any kind
        for values in (macro, spread.low, spread.high, spread.best):
            values[unprobed] = np.nan
        notes.append(f"layers {[layers[i] for i in np.flatnonzero(unprobed)]} not probed (layer_reason says why)")
    chosen = fits.chosen[task_rows]
    at_edge = at_grid_edge(chosen, config, notes)
    arrays = LayerArrays(
        score=score,
        score_std=task.std(0, ddof=1) if len(task_rows) > 1 else np.full(n_layers, np.nan),
        ci_low=spread.low,
        ci_high=spread.high,
        macro_f1=macro,
        control_score=mean_of("control"),
        shuffled_score=mean_of("shuffled"),
        mdl_codelength_bits=fits.mdl_bits,
        chosen_C=chosen,
        converged=fits.converged[task_rows].all(0),
        best_layer_prob=spread.best,
        mdl_C=fits.mdl_c,
        C_at_grid_edge=at_edge,
    )
    return build_result(
        kind, config, layers, arrays,
        majority_baseline=majority_baseline(docs.y, docs.is_train, kind),
        uniform_bits=uniform_codelength(docs.n_train, enc) if config.mdl else math.nan,
        n_train=docs.n_train, n_dev=int(sets[0].dev.sum()), n_test=docs.n_test, notes=tuple(notes),
        control_reason=fit_sets.control_reason, control_shared=fit_sets.control_shared, interval=spread.method,
        layer_reason=tuple(fits.layer_reason),
    )  # fmt: skip


__all__ = ["run_protocol"]
