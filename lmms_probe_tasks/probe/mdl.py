"""Measures the online (prequential) codelength of the probe-train labels per layer (Voita & Titov 2020).

The labels are sent in a seeded random order, in blocks ending at
:data:`~lmms_probe_tasks.probe.config.MDL_FRACTIONS` of probe-train; the first block
with the uniform code, every later one with a linear probe fitted on all blocks before
it, each with a penalised intercept so that a class unseen in a small block keeps a
finite codelength. The block models' L2 strength is chosen by the code itself: every C of
the grid, and the uniform code itself, is a candidate and the shortest code wins, charged
``log2(grid size + 1)`` bits for the choice (a two-part code), so the codelength never hinges
on a dev-accuracy choice that is nearly flat in C, and compression ``uniform / codelength``
is never below 1 by more than that charge (a noise layer picks the uniform code).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lmms_probe_tasks.probe.config import MDL_FRACTIONS, ProtocolConfig
from lmms_probe_tasks.probe.features import ROW_BLOCK
from lmms_probe_tasks.probe.logreg import BatchedLogReg, fit_logreg, problem_batches
from lmms_probe_tasks.probe.targets import EncodedTargets, class_index, log_proba, row_nll


def mdl_block_ends(n_train: int) -> np.ndarray:
    """Ends of the online-code blocks for ``n_train`` docs (at least one doc in the first block).

    Args:
        n_train: Probe-train docs.

    Returns:
        ``[m]`` strictly increasing int ends, the last equal to ``n_train``.
    """
    ends = np.unique(np.maximum(1, np.round(np.array(MDL_FRACTIONS) * n_train)).astype(np.int64))
    return ends[ends <= n_train]


def uniform_codelength(n_train: int, enc: EncodedTargets) -> float:
    """Bits of ``n_train`` labels under the uniform code (the numerator of the compression)."""
    return float(n_train * enc.bits_per_doc)


def online_codelengths(
    xs: torch.Tensor,
    enc: EncodedTargets,
    y: np.ndarray,
    order: np.ndarray,
    ends: np.ndarray,
    c_values: np.ndarray,
    config: ProtocolConfig,
) -> np.ndarray:
    """Online codelength of the probe-train labels in ``order``, per layer and per C.

    Block ``b``'s model is fitted on the first ``ends[b]`` docs of ``order`` (a gathered
    prefix, so the cost of all blocks together is about one fit on probe-train per C) and
    codes the docs up to ``ends[b + 1]``.

    Args:
        xs: ``[l, n, d]`` float32 standardised features of the probe-train rows only.
        enc: The task's encoded targets (rows beyond ``n`` are ignored).
        y: Labels of the same rows (``[>= n]`` class ids; multiclass only, else ignored).
        order: ``[n]`` permutation of the rows: the order the labels are sent in.
        ends: ``[m]`` block ends from :func:`mdl_block_ends`.
        c_values: ``[G]`` C values of the block models (also the intercept's C).
        config: Solver settings (``max_iter``, ``tol``, ``batch_mb``).

    Returns:
        ``[l, G]`` float64 codelength in bits.
    """
    nl = xs.shape[0]
    c_values = np.asarray(c_values, dtype=np.float64)
    bits = np.full((nl, c_values.size), float(ends[0]) * enc.bits_per_doc)
    true_idx = class_index(y, enc.classes) if enc.kind == "multiclass" else np.empty(0, np.int64)
    for b in range(ends.size - 1):
        fit_rows, coded = order[: ends[b]], order[ends[b] : ends[b + 1]]
        prefix = xs[:, torch.as_tensor(fit_rows, device=xs.device)]  # a copy of the block's rows only
        for batch in problem_batches(c_values.size, nl, fit_rows.size, enc.targets.shape[1], config.batch_mb):
            c = np.broadcast_to(c_values[list(batch)], (nl, len(batch)))
            model = fit_logreg(
                prefix, enc.targets[fit_rows], np.ones(fit_rows.size, np.float32), c, loss=enc.loss,
                max_iter=config.max_iter, tol=config.tol, intercept_C=c,
            )  # fmt: skip
            for r0 in range(0, coded.size, ROW_BLOCK):
                bits[:, batch.start : batch.stop] += _bits(model, xs, coded[r0 : r0 + ROW_BLOCK], enc, true_idx)
        del prefix
    return bits


def two_part_codelength(bits: np.ndarray, c_values: np.ndarray, uniform_bits: float) -> tuple[np.ndarray, np.ndarray]:
    """Choose each layer's code by its length and pay for the choice.

    The candidates are the online codes of every C and the uniform code itself (reported
    as C = 0), so a layer never codes worse than uniform by more than the charge.

    Args:
        bits: ``[l, G]`` online codelength per C (:func:`online_codelengths`).
        c_values: ``[G]`` the C values.
        uniform_bits: Codelength of the same labels under the uniform code.

    Returns:
        ``(codelength [l], chosen C [l])``: the shortest code plus ``log2(G + 1)`` bits (the
        cost of naming the chosen code among ``G + 1``), and its C (0.0: the uniform code).
    """
    candidates = np.concatenate([bits, np.full((bits.shape[0], 1), uniform_bits)], axis=1)
    c_all = np.append(np.asarray(c_values, dtype=np.float64), 0.0)
    best = np.argmin(candidates, axis=1)
    return candidates[np.arange(bits.shape[0]), best] + math.log2(c_all.size), c_all[best]


def _bits(
    model: BatchedLogReg, xs: torch.Tensor, rows: np.ndarray, enc: EncodedTargets, true_idx: np.ndarray
) -> np.ndarray:
    """Bits, per layer and problem (``[l, G]`` float64), of the labels of ``rows`` under ``model``."""
    z = model.logits(xs, rows)  # [l, r, G, K]
    if enc.kind == "multiclass":
        idx = torch.as_tensor(true_idx[rows], device=xs.device).view(1, -1, 1, 1).expand(*z.shape[:3], 1)
        nats = -log_proba(z, enc.loss, enc.binary).gather(-1, idx).squeeze(-1)
    else:
        nats = row_nll(z, torch.as_tensor(enc.targets[rows], device=xs.device)[None, :, None], "sigmoid")
    return (nats.double().sum(1) / math.log(2)).cpu().numpy()


__all__ = ["mdl_block_ends", "online_codelengths", "two_part_codelength", "uniform_codelength"]
