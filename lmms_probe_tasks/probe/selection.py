"""Chooses each layer's L2 strength C on the dev splits: every C of the grid in one batched fit, scored on dev."""

from __future__ import annotations

import math

import numpy as np
import torch

from lmms_probe_tasks.probe.config import ProtocolConfig
from lmms_probe_tasks.probe.controls import FitSet
from lmms_probe_tasks.probe.logreg import fit_logreg, problem_batches
from lmms_probe_tasks.probe.metrics import mean_average_precision
from lmms_probe_tasks.probe.targets import EncodedTargets, class_index, log_proba, row_nll


def choose_C(
    xs: torch.Tensor,
    sets: list[FitSet],
    fallback_seeds: list[int],
    enc: EncodedTargets,
    config: ProtocolConfig,
) -> np.ndarray:
    """The C of every set and layer: chosen on its dev split, or borrowed where that split cannot choose.

    A set of a fallback seed takes the median C its label set won under the other seeds,
    or 1.0 if every seed falls back.

    Args:
        xs: ``[l, n, d]`` float32 standardised features of the probe-train rows only.
        sets: The label sets (their first ``n`` rows are ``xs``'s).
        fallback_seeds: Seeds whose dev split cannot select C.
        enc: The task's encoded targets.
        config: The C grid and solver settings.

    Returns:
        ``[n_sets, l]`` float64 C.
    """
    usable = [j for j, fs in enumerate(sets) if fs.seed_index not in fallback_seeds]
    c_sel = np.ones((len(sets), xs.shape[0]))
    c_sel[usable] = select_C(xs, [sets[j] for j in usable], enc, config) if usable else 1.0
    for j, fs in enumerate(sets):
        if fs.seed_index in fallback_seeds:
            same = [u for u in usable if sets[u].name == fs.name]
            c_sel[j] = np.median(c_sel[same], axis=0) if same else 1.0
    return c_sel


def select_C(
    xs: torch.Tensor,
    sets: list[FitSet],
    enc: EncodedTargets,
    config: ProtocolConfig,
) -> np.ndarray:
    """Fit every C of the grid on train-minus-dev and choose one per (set, layer) on dev.

    The best dev metric wins; ties go to the lower dev log-loss, then the smaller C.

    Args:
        xs: ``[l, n, d]`` float32 standardised features of the probe-train rows only
            (the first ``n`` rows of the sets' arrays).
        sets: The label sets to choose for.
        enc: The task's encoded targets.
        config: The C grid and solver settings.

    Returns:
        ``[n_sets, l]`` chosen C.
    """
    nl, n, _ = xs.shape
    grid = np.asarray(config.c_grid)
    n_grid = grid.size
    dev_rows = np.flatnonzero(np.any([fs.dev for fs in sets], axis=0))
    problems = [(j, c) for j in range(len(sets)) for c in range(n_grid)]
    metric = np.full((nl, len(problems)), np.nan)
    loss = np.full((nl, len(problems)), np.nan)
    for batch in problem_batches(len(problems), nl, n, enc.targets.shape[1], config.batch_mb):
        members = [problems[p] for p in batch]
        model = fit_logreg(
            xs,
            np.stack([sets[j].targets[:n] for j, _ in members], axis=1),
            np.stack([sets[j].train[:n] for j, _ in members], axis=1).astype(np.float32),
            grid[[c for _, c in members]],
            loss=enc.loss,
            max_iter=config.max_iter,
            tol=config.tol,
        )
        z = model.logits(xs, dev_rows)
        metric[:, batch.start : batch.stop], loss[:, batch.start : batch.stop] = _dev_scores(
            z, [sets[j] for j, _ in members], dev_rows, enc
        )
    # Best dev metric; ties by lower dev log-loss, then the smaller C (argmin takes the first).
    metric = np.where(np.isnan(metric), -np.inf, metric).reshape(nl, len(sets), n_grid)
    loss = np.where(np.isnan(loss), np.inf, loss).reshape(nl, len(sets), n_grid)
    top = metric >= metric.max(-1, keepdims=True) - 1e-12
    best = np.argmin(np.where(top, loss, np.inf), axis=-1)  # [l, n_sets]
    return grid[best].T


def _logp_true(logp: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather ``logp[..., m, p, idx[m, p]]``: ``[l, m, P, C]`` -> ``[l, m, P]`` (absent class: -inf)."""
    safe = idx.clamp_min(0)
    out = logp.gather(-1, safe.expand(logp.shape[0], *safe.shape).unsqueeze(-1)).squeeze(-1)
    return torch.where(idx >= 0, out, torch.full_like(out, -math.inf))


def _dev_scores(
    z: torch.Tensor,
    sets: list[FitSet],
    rows: np.ndarray,
    enc: EncodedTargets,
) -> tuple[np.ndarray, np.ndarray]:
    """Dev metric and log-loss of every problem in ``z`` (``[l, m, P, K]`` logits of ``rows``).

    Returns:
        ``(metric, logloss)``, each ``[l, P]`` float64.
    """
    nl, _, n_p, _ = z.shape
    mask = torch.as_tensor(np.stack([fs.dev[rows] for fs in sets], axis=1), device=z.device)  # [m, P]
    count = mask.sum(0).clamp_min(1)
    logp = log_proba(z, enc.loss, enc.binary)
    if enc.kind == "multiclass":
        idx = torch.as_tensor(np.stack([class_index(fs.labels[rows], enc.classes) for fs in sets], 1), device=z.device)
        lp = _logp_true(logp, idx)
        acc = ((logp.argmax(-1) == idx) & mask).sum(1) / count
        loss = -(torch.where(mask, lp, torch.zeros_like(lp))).sum(1) / count
        return acc.double().cpu().numpy(), loss.double().cpu().numpy()
    t = torch.as_tensor(np.stack([fs.targets[rows] for fs in sets], axis=1), device=z.device)  # [m, P, k]
    bce = row_nll(z, t, "sigmoid")
    loss = (torch.where(mask, bce, torch.zeros_like(bce))).sum(1) / count
    prob = logp.exp().cpu().numpy()
    metric = np.full((nl, n_p), np.nan)
    for p, fs in enumerate(sets):
        r = fs.dev[rows]
        for layer in range(nl):
            metric[layer, p] = mean_average_precision(prob[layer, r, p], fs.labels[rows][r])[0]
    return metric, loss.double().cpu().numpy()


__all__ = ["choose_C", "select_C"]
