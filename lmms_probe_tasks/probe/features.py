"""Reads a task's ``[n_layers, n, d]`` features a few layers at a time as standardised float32 tensors.

The features arrive as one array (float16 or float32, possibly a ``numpy.memmap``
larger than memory). :func:`iter_layer_chunks` converts at most ``layer_chunk`` layers
at a time to float32 torch tensors and standardises them on the probe-train rows, so
no float32 copy of all layers is ever held.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

#: Rows handled at a time where a temporary would otherwise be as large as a layer.
ROW_BLOCK = 4096


def as_row_mask(rows: np.ndarray, n: int) -> np.ndarray:
    """Check that ``rows`` is an ``[n]`` bool row selector and return it.

    Args:
        rows: The selector.
        n: Number of rows it must cover.

    Returns:
        ``rows`` as an ndarray.

    Raises:
        ValueError: Not bool, or not of shape ``(n,)``.
    """
    rows = np.asarray(rows)
    if rows.dtype != bool or rows.shape != (n,):
        raise ValueError(f"row selector must be a [n]={n} bool mask; got dtype {rows.dtype}, shape {rows.shape}")
    return rows


def standardize_(xs: torch.Tensor, fit_rows: np.ndarray, row_block: int = ROW_BLOCK) -> None:
    """Standardise every layer in place with the mean and std of ``fit_rows``.

    Matches scikit-learn's ``StandardScaler``: population std, and a feature that is
    constant on ``fit_rows`` keeps scale 1.

    Args:
        xs: ``[l, n, d]`` float32 tensor, modified in place.
        fit_rows: ``[n]`` bool, the rows whose statistics are used (probe-train).
        row_block: Rows squared at a time; bounds the temporary to ``row_block * d`` floats.

    Raises:
        ValueError: ``fit_rows`` selects no row.
    """
    n = xs.shape[1]
    mask = as_row_mask(fit_rows, n)
    n_fit = int(mask.sum())
    if n_fit == 0:
        raise ValueError("standardisation needs at least one probe-train row; got none")
    w = torch.from_numpy(mask.astype(np.float32)).to(xs.device)
    # matmul with a broadcast weight row reads xs once and makes no copy of it.
    mean = torch.matmul(w.view(1, 1, n).expand(xs.shape[0], 1, n), xs) / n_fit  # [l, 1, d]
    xs.sub_(mean)
    var = torch.zeros_like(mean)
    for j in range(xs.shape[0]):  # one layer and row block at a time: a small squared temporary
        for r0 in range(0, n, row_block):
            block = xs[j, r0 : r0 + row_block]
            var[j] += w[r0 : r0 + row_block] @ (block * block)
    scale = (var / n_fit).sqrt_()
    # StandardScaler leaves (near-)constant features unscaled instead of dividing by ~0.
    scale = torch.where(scale < 10 * torch.finfo(torch.float32).eps * mean.abs().clamp_min(1.0), 1.0, scale)
    xs.div_(scale)


def iter_layer_chunks(
    x: np.ndarray,
    layer_chunk: int,
    *,
    fit_rows: np.ndarray,
    device: str | torch.device = "cpu",
    row_order: np.ndarray | None = None,
    bad_layers: list[int] | None = None,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield ``layer_chunk`` layers at a time as standardised float32 tensors.

    Only ``x[l0:l1]`` is ever converted to float32, so peak memory is one chunk
    (``layer_chunk * n * d * 4`` bytes) however many layers ``x`` holds; a
    ``numpy.memmap`` is read chunk by chunk. The caller should ``del`` its reference
    to a chunk at the end of the loop body; otherwise the previous chunk is still
    alive while the next one is read (two chunks at peak).

    Args:
        x: ``[n_layers, n, d]`` features (float16, float32 or float64; ndarray or memmap).
        layer_chunk: Layers per chunk (>= 1).
        fit_rows: ``[m]`` bool over the yielded rows: rows whose statistics standardise
            each layer.
        device: Torch device of the yielded tensors.
        row_order: ``[m]`` int rows of ``x`` to yield, in this order (default all ``n``).
            Putting probe-train rows first lets a fit use the contiguous view
            ``xs[:, :n_train]`` instead of wasting work on zero-weight test rows.
        bad_layers: When given, a layer holding a NaN or inf feature is zeroed (so the
            fits of its chunk still run) and its index is appended here, instead of raising.

    Yields:
        ``(l0, l1, xs)`` with ``xs`` a ``[l1 - l0, m, d]`` float32 tensor on ``device``.

    Raises:
        ValueError: Bad ``layer_chunk``, a non-float ``x``, or non-finite features.
    """
    if not (isinstance(layer_chunk, int) and layer_chunk >= 1):
        raise ValueError(f"layer_chunk={layer_chunk!r} must be an integer >= 1, e.g. layer_chunk=4")
    if x.ndim != 3:
        raise ValueError(f"features must be [n_layers, n_docs, hidden]; got shape {x.shape}. Fix: np.stack(layers, 0)")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"features must be a float array (float16/float32); got dtype {x.dtype}")
    for l0 in range(0, x.shape[0], layer_chunk):
        l1 = min(l0 + layer_chunk, x.shape[0])
        chunk = _read_chunk(x, l0, l1, row_order, torch.device(device))
        bad = _nonfinite_layers(chunk)
        if bad and bad_layers is None:
            raise ValueError(
                f"layers {[l0 + j for j in bad]} contain NaN or inf features; pass bad_layers=[] to score the others"
            )
        for j in bad:
            chunk[j].zero_()
            bad_layers.append(l0 + j)  # type: ignore[union-attr]
        standardize_(chunk, fit_rows)
        yield l0, l1, chunk
        del chunk  # before the next chunk is read: at most one chunk alive here


def _nonfinite_layers(chunk: torch.Tensor) -> list[int]:
    """Positions, within a chunk (``[l, m, d]``), of the layers holding a NaN or inf feature."""
    # A sum is non-finite if some element is: a NaN/inf check without a chunk-sized mask
    # (a sum that merely overflows is rechecked element-wise, one layer at a time).
    finite = torch.isfinite(chunk.sum(dim=(1, 2)))
    if bool(finite.all()):
        return []
    return [j for j in range(chunk.shape[0]) if not bool(finite[j]) and not bool(torch.isfinite(chunk[j]).all())]


def _read_chunk(x: np.ndarray, l0: int, l1: int, row_order: np.ndarray | None, device: torch.device) -> torch.Tensor:
    """The one float32 copy, of layers ``l0:l1`` only (a memmap slice is read from disk here)."""
    if device.type != "cpu":
        # Ship the stored dtype (half the bytes for float16) and widen on the device.
        rows = x[l0:l1] if row_order is None else x[l0:l1][:, row_order]
        return torch.from_numpy(np.ascontiguousarray(rows)).to(device).float()
    if row_order is None:
        return torch.from_numpy(np.array(x[l0:l1], dtype=np.float32, copy=True))
    out = np.empty((l1 - l0, len(row_order), x.shape[2]), dtype=np.float32)
    for r0 in range(0, len(row_order), ROW_BLOCK):  # gathered in row blocks: a small float16 temporary
        out[:, r0 : r0 + ROW_BLOCK] = x[l0:l1, row_order[r0 : r0 + ROW_BLOCK]]
    return torch.from_numpy(out)


__all__ = ["ROW_BLOCK", "as_row_mask", "iter_layer_chunks", "standardize_"]
