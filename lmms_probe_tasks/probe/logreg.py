"""Fits L2 logistic-regression probes for every layer of a chunk and many problems per layer in one batched solve.

A *problem* is a (target matrix, row weights, C) triple: grid values of C, seeds with
different dev splits, control labels and MDL blocks all become problems that share one
pass over the features. The objective of layer ``l``, problem ``g`` is scikit-learn's::

    sum_i w_ig * logloss_i + 1 / (2 C_lg) * ||W_lg||^2      (intercept unpenalised)

divided by ``n_g = sum_i w_ig`` (the minimiser is unchanged; the scaling makes the
gradient tolerance ``tol`` mean the same as scikit-learn's ``gtol``). Layers and
problems are independent (see :mod:`lmms_probe_tasks.probe.solver`). Two classes use
one sigmoid logit, three or more a softmax over all classes, multi-label targets one
sigmoid per class -- the same models as scikit-learn's ``LogisticRegression`` (and
``OneVsRestClassifier`` of it).

For ``d <= 1024`` L-BFGS is preconditioned with a bound on the Hessian built from each
layer's feature covariance (one eigendecomposition per layer, shared by every C): the
same solutions in about a fifth of the iterations. On one CPU core (the benchmark,
``benchmarks/probe_fit.py``) that makes a 13-value C grid over 33 layers about 8x faster
than a per-layer scikit-learn loop; a single C under 2x, because each L-BFGS iteration
streams the same bytes either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lmms_probe_tasks.probe.features import ROW_BLOCK
from lmms_probe_tasks.probe.solver import solve
from lmms_probe_tasks.probe.targets import LossKind

#: Largest feature dimension preconditioned by default (the eigendecomposition is O(d^3) per layer).
PRECONDITION_MAX_DIM = 1024


@dataclass(frozen=True)
class BatchedLogReg:
    """Logistic-regression probes of ``l`` layers x ``G`` problems (on standardised features).

    Attributes:
        theta: ``[l, G, K, d + 1]`` float32; ``theta[..., :d]`` are the weights,
            ``theta[..., d]`` the intercepts.
        n_iter: ``[l, G]`` int L-BFGS iterations used.
        converged: ``[l, G]`` bool, gradient max-norm reached ``tol``.
        loss: ``softmax`` or ``sigmoid``.
    """

    theta: torch.Tensor
    n_iter: np.ndarray
    converged: np.ndarray
    loss: LossKind

    def logits(self, xs: torch.Tensor, rows: np.ndarray | None = None, row_block: int = ROW_BLOCK) -> torch.Tensor:
        """Logits of the given rows for every layer and problem.

        Args:
            xs: ``[l, n, d]`` float32, standardised as for the fit.
            rows: ``[m]`` int row indices (default all rows); gathered ``row_block``
                rows at a time so only a small copy of ``xs`` is made.
            row_block: Rows gathered at a time.

        Returns:
            ``[l, m, G, K]`` float32 logits.
        """
        nl, n, d = xs.shape
        _, g, k, _ = self.theta.shape
        wt = self.theta[..., :d].reshape(nl, g * k, d).transpose(1, 2)
        bias = self.theta[..., d].reshape(nl, 1, g * k)
        if rows is None:
            return (torch.bmm(xs, wt) + bias).view(nl, n, g, k)
        idx = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=xs.device)
        out = []
        for r0 in range(0, idx.numel(), row_block):
            out.append(torch.bmm(xs[:, idx[r0 : r0 + row_block]], wt) + bias)
        if not out:
            return xs.new_zeros((nl, 0, g, k))
        return torch.cat(out, dim=1).view(nl, -1, g, k)


def fit_logreg(
    xs: torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    weights: np.ndarray | torch.Tensor,
    C: float | np.ndarray | torch.Tensor,
    *,
    loss: LossKind,
    max_iter: int = 1000,
    tol: float = 1e-4,
    intercept_C: float | np.ndarray | torch.Tensor | None = None,
    precondition: bool | None = None,
) -> BatchedLogReg:
    """Fit L2 logistic regression for all layers and problems in one batched L-BFGS run.

    The loss is separable over (layer, problem), and every problem keeps its own
    L-BFGS memory, Armijo step and stopping test, so each solution equals what a
    separate fit would give. A step's logits are ``Z + t * (X @ D)``: one forward
    and one backward batched matmul per iteration, however many step sizes the line
    search tries.

    Args:
        xs: ``[l, n, d]`` float32 standardised features (see
            :func:`lmms_probe_tasks.probe.features.iter_layer_chunks`).
        targets: ``[n, K]`` (shared) or ``[n, G, K]`` (per problem) 0/1 targets.
        weights: ``[n]`` or ``[n, G]`` non-negative row weights; 0 leaves a row out
            of a problem (dev and test rows, rows beyond an MDL block).
        C: Inverse L2 strength (scikit-learn's ``C``): scalar, ``[G]`` or ``[l, G]``.
        loss: ``softmax`` (K >= 3 exclusive classes) or ``sigmoid`` (independent logits).
        max_iter: L-BFGS iteration cap per problem.
        tol: Stop a problem when the max-abs gradient of its ``n_g``-scaled
            objective is <= ``tol`` (scikit-learn's ``gtol``).
        intercept_C: If given, also penalise the intercept as ``1/(2 C_b) b^2``
            (same shapes as ``C``); keeps intercepts finite when a class is absent
            from a small training set (MDL blocks). Default: unpenalised, as scikit-learn.
        precondition: Precondition L-BFGS with a bound on the Hessian built from the
            features' covariance (``c * X^T X / n + lam * I``, c = 1/2 softmax, 1/4
            sigmoid; one eigendecomposition per layer). It changes the path, not the
            solution, and cuts iterations several-fold on correlated features; it costs
            ``n d^2 + d^3`` per layer. Default: on when ``d <= PRECONDITION_MAX_DIM``.

    Returns:
        The fitted probes, started from zero as scikit-learn does.

    Raises:
        ValueError: Mismatched shapes, a problem with zero total weight, bad settings.
    """
    if loss not in ("softmax", "sigmoid"):
        raise ValueError(f"loss {loss!r} is not supported; valid: softmax, sigmoid")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"max_iter={max_iter!r} must be an integer >= 1, e.g. max_iter=1000")
    if not (tol > 0):
        raise ValueError(f"tol={tol!r} must be > 0, e.g. tol=1e-4")
    if xs.ndim != 3 or xs.dtype != torch.float32:
        raise ValueError(f"xs must be a [l, n, d] float32 tensor; got {tuple(xs.shape)} {xs.dtype}")
    nl, n, d = xs.shape
    dev = xs.device
    T, w, c = _broadcast_problems(targets, weights, C, nl, n, dev)
    g = T.shape[1]
    if bool((w < 0).any()):
        raise ValueError("weights must be non-negative")
    ng = w.sum(0)  # [G]
    if bool((ng <= 0).any()):
        empty = torch.nonzero(ng <= 0).flatten().tolist()
        raise ValueError(f"problems {empty} have no training row (all weights 0); give each problem >= 1 row")
    wn = w / ng  # [n, G]: mean-scaled objective
    lam = 1.0 / (c * ng)  # [l, G] weight-penalty coefficient
    if intercept_C is None:
        lam_b = torch.zeros(nl, g, device=dev)
    else:
        _, _, cb = _broadcast_problems(np.zeros((n, 1)), np.ones(n), intercept_C, nl, n, dev)
        lam_b = 1.0 / (cb.expand(nl, g) * ng)
    use_pc = d <= PRECONDITION_MAX_DIM if precondition is None else bool(precondition)
    theta, n_iter, converged = solve(
        xs, T, wn, lam, lam_b, ng, loss=loss, max_iter=max_iter, tol=tol, precondition=use_pc
    )
    return BatchedLogReg(theta, n_iter, converged, loss)


def _as_float_tensor(value: np.ndarray | torch.Tensor | float) -> torch.Tensor:
    """``value`` as a float32 tensor (an ndarray or number is converted, a tensor kept)."""
    if torch.is_tensor(value):
        return value
    return torch.as_tensor(np.asarray(value, dtype=np.float32))


def _broadcast_problems(
    targets: np.ndarray | torch.Tensor,
    weights: np.ndarray | torch.Tensor,
    C: float | np.ndarray | torch.Tensor,
    n_layers: int,
    n: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bring targets, weights and C to ``[n, G, K]``, ``[n, G]`` and ``[n_layers, G]`` float32 on ``device``.

    Raises:
        ValueError: A shape that does not broadcast, or a C that is not positive and finite.
    """
    t = _as_float_tensor(targets).to(device, torch.float32)
    w = _as_float_tensor(weights).to(device, torch.float32)
    c = torch.as_tensor(_as_float_tensor(C), dtype=torch.float32)
    if t.ndim == 2:
        t = t[:, None, :]
    if w.ndim == 1:
        w = w[:, None]
    if t.ndim != 3 or t.shape[0] != n:
        raise ValueError(f"targets must be [n, K] or [n, G, K] with n={n}; got shape {tuple(t.shape)}")
    if w.ndim != 2 or w.shape[0] != n:
        raise ValueError(f"weights must be [n] or [n, G] with n={n}; got shape {tuple(w.shape)}")
    if c.ndim == 0:
        c = c.view(1, 1)
    elif c.ndim == 1:
        c = c.view(1, -1)
    if c.ndim != 2 or c.shape[0] not in (1, n_layers):
        raise ValueError(f"C must be a scalar, [G] or [n_layers={n_layers}, G]; got shape {tuple(c.shape)}")
    if not bool((c > 0).all()) or not bool(torch.isfinite(c).all()):
        raise ValueError(f"C must be positive and finite (inverse L2 strength); got {c.flatten()[:5].tolist()}")
    g = max(t.shape[1], w.shape[1], c.shape[1])
    for name, size in (("targets", t.shape[1]), ("weights", w.shape[1]), ("C", c.shape[1])):
        if size not in (1, g):
            raise ValueError(f"{name} has {size} problems but another argument has {g}; give 1 or {g}")
    c = c.to(device).expand(n_layers, g)
    return t.expand(n, g, t.shape[2]), w.expand(n, g), c


def problem_batches(n_problems: int, n_layers: int, n_rows: int, n_cols: int, batch_mb: int) -> list[range]:
    """Split problems into batches whose solver temporaries stay within a memory budget.

    Args:
        n_problems: Problems to fit.
        n_layers: Layers fitted together.
        n_rows: Rows of the fit.
        n_cols: Logits per problem ``K``.
        batch_mb: Budget, MiB, for the solver's ~6 float32 logit temporaries.

    Returns:
        Consecutive ranges of problem indices covering ``0..n_problems-1``.
    """
    per_problem = 6 * 4 * n_layers * n_rows * n_cols
    size = max(1, (batch_mb << 20) // max(per_problem, 1))
    return [range(p0, min(p0 + size, n_problems)) for p0 in range(0, n_problems, size)]


__all__ = ["PRECONDITION_MAX_DIM", "BatchedLogReg", "fit_logreg", "problem_batches"]
