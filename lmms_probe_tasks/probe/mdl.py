"""Measures the online (prequential) codelength of the probe-train labels per layer (Voita & Titov 2020).

The labels are sent in a seeded random order, in blocks ending at
:data:`~lmms_probe_tasks.probe.config.MDL_FRACTIONS` of probe-train; the first block
with the uniform code, every later one with a linear probe fitted on all blocks before
it. All block models of a layer chunk are problems of one batched fit; each carries a
penalised intercept so that a class unseen in a small block keeps a finite codelength.
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


def online_codelength(
    xs: torch.Tensor,
    enc: EncodedTargets,
    y: np.ndarray,
    order: np.ndarray,
    ends: np.ndarray,
    layer_c: np.ndarray,
    config: ProtocolConfig,
) -> np.ndarray:
    """Online codelength of the probe-train labels in ``order``, per layer.

    Args:
        xs: ``[l, n, d]`` float32 standardised features of the probe-train rows only.
        enc: The task's encoded targets (rows beyond ``n`` are ignored).
        y: Labels of the same rows (``[>= n]`` class ids; multiclass only, else ignored).
        order: ``[n]`` permutation of the rows: the order the labels are sent in.
        ends: ``[m]`` block ends from :func:`mdl_block_ends`.
        layer_c: ``[l]`` C of each layer's block models (also the intercept's C).
        config: Solver settings (``max_iter``, ``tol``, ``batch_mb``).

    Returns:
        ``[l]`` float64 codelength in bits.
    """
    nl, n, _ = xs.shape
    n_blocks = ends.size - 1
    first = float(ends[0]) * enc.bits_per_doc
    if n_blocks == 0:
        return np.full(nl, first)
    true_idx = class_index(y, enc.classes) if enc.kind == "multiclass" else np.empty(0, np.int64)
    weights = np.zeros((n, n_blocks), np.float32)  # xs holds the probe-train rows only
    for b in range(n_blocks):
        weights[order[: ends[b]], b] = 1.0
    c = np.broadcast_to(np.asarray(layer_c, np.float64)[:, None], (nl, n_blocks))
    coded = order[ends[0] :]
    block_of = np.searchsorted(ends, np.arange(ends[0], ends[-1]), side="right") - 1  # model coding each doc
    bits = torch.zeros(nl, dtype=torch.float64, device=xs.device)
    for batch in problem_batches(n_blocks, nl, n, enc.targets.shape[1], config.batch_mb):
        cols = list(batch)
        model = fit_logreg(
            xs, enc.targets[:n], weights[:, cols], c[:, cols], loss=enc.loss, max_iter=config.max_iter,
            tol=config.tol, intercept_C=c[:, cols],
        )  # fmt: skip
        mine = (block_of >= batch.start) & (block_of < batch.stop)
        docs, doc_block = coded[mine], block_of[mine] - batch.start
        for r0 in range(0, docs.size, ROW_BLOCK):
            bits += _block_bits(model, xs, docs[r0 : r0 + ROW_BLOCK], doc_block[r0 : r0 + ROW_BLOCK], enc, true_idx)
    return first + bits.cpu().numpy()


def _block_bits(
    model: BatchedLogReg,
    xs: torch.Tensor,
    rows: np.ndarray,
    blocks: np.ndarray,
    enc: EncodedTargets,
    true_idx: np.ndarray,
) -> torch.Tensor:
    """Bits, per layer (``[l]`` float64), of the labels of ``rows`` (``[r]``), each under its block's model."""
    nl = xs.shape[0]
    blk = torch.as_tensor(blocks, device=xs.device)
    z = model.logits(xs, rows)  # [l, r, B, K]
    z = z[:, torch.arange(rows.size, device=xs.device), blk]  # [l, r, K]: each doc's own block model
    if enc.kind == "multiclass":
        idx = torch.as_tensor(true_idx[rows], device=xs.device).view(1, -1, 1).expand(nl, -1, 1)
        nats = -log_proba(z, enc.loss, enc.binary).gather(-1, idx).squeeze(-1)
    else:
        nats = row_nll(z, torch.as_tensor(enc.targets[rows], device=xs.device), "sigmoid")
    return nats.double().sum(1) / math.log(2)


__all__ = ["mdl_block_ends", "online_codelength", "uniform_codelength"]
