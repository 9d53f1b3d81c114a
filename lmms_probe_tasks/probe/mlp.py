"""Trains one-hidden-layer MLP probes for all layers of a chunk at once, early-stopped on a dev split per layer.

Adam is elementwise, so batching layers does not couple them: each layer's gradient is
its own and each keeps the weights of its best dev epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from lmms_probe_tasks.probe.features import ROW_BLOCK, as_row_mask
from lmms_probe_tasks.probe.targets import LossKind, row_nll


@dataclass(frozen=True)
class MLPConfig:
    """Settings of the one-hidden-layer MLP probe (ReLU, Adam, early stopping on dev).

    Attributes:
        hidden: Hidden units.
        lr: Adam learning rate.
        weight_decay: Adam's (coupled) L2 coefficient.
        batch_size: Training rows per step.
        max_epochs: Epoch cap.
        patience: Epochs without a lower dev log-loss before a layer stops improving.
    """

    hidden: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 200
    patience: int = 10

    def __post_init__(self) -> None:
        for name in ("hidden", "batch_size", "max_epochs", "patience"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ValueError(
                    f"MLPConfig {name}={value!r} must be an integer >= 1; e.g. {name}={getattr(MLPConfig, name)}"
                )
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if not (
                isinstance(value, (int, float))
                and math.isfinite(value)
                and value >= (0 if name == "weight_decay" else 1e-12)
            ):
                valid = ">= 0" if name == "weight_decay" else "> 0"
                raise ValueError(
                    f"MLPConfig {name}={value!r} must be a finite number {valid}; "
                    f"e.g. {name}={getattr(MLPConfig, name)}"
                )


@dataclass(frozen=True)
class BatchedMLP:
    """One-hidden-layer MLP probes of ``l`` layers (on standardised features).

    Attributes:
        w1: ``[l, d, h]`` float32.
        b1: ``[l, 1, h]`` float32.
        w2: ``[l, h, K]`` float32.
        b2: ``[l, 1, K]`` float32.
        best_epoch: ``[l]`` int, the epoch (1-based) whose weights were kept.
        loss: ``softmax`` or ``sigmoid``.
    """

    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor
    best_epoch: np.ndarray
    loss: LossKind

    def logits(self, xs: torch.Tensor, rows: np.ndarray | None = None, row_block: int = ROW_BLOCK) -> torch.Tensor:
        """Logits of some rows for every layer.

        Args:
            xs: ``[l, n, d]`` float32, standardised as for the fit.
            rows: ``[m]`` int row indices (default all rows).
            row_block: Rows forwarded at a time.

        Returns:
            ``[l, m, K]`` float32 logits.
        """
        idx = torch.arange(xs.shape[1], device=xs.device) if rows is None else torch.as_tensor(rows, device=xs.device)
        out = [self._forward(xs[:, idx[r0 : r0 + row_block]]) for r0 in range(0, idx.numel(), row_block)]
        return torch.cat(out, dim=1) if out else xs.new_zeros((xs.shape[0], 0, self.w2.shape[2]))

    def _forward(self, xb: torch.Tensor) -> torch.Tensor:
        return _mlp_forward(xb, self.w1, self.b1, self.w2, self.b2)


def _mlp_forward(
    xb: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor
) -> torch.Tensor:
    """``[l, m, d]`` rows -> ``[l, m, K]`` logits of a ReLU MLP per layer."""
    return torch.bmm(torch.relu(torch.bmm(xb, w1) + b1), w2) + b2


def fit_mlp(
    xs: torch.Tensor,
    targets: np.ndarray,
    train_rows: np.ndarray,
    dev_rows: np.ndarray,
    *,
    loss: LossKind,
    config: MLPConfig = MLPConfig(),
    seed: int = 0,
) -> BatchedMLP:
    """Train one MLP probe per layer, all layers of a chunk at once, early-stopped on dev.

    Each layer keeps the weights of its epoch with the lowest dev log-loss; training
    stops when every layer has gone ``patience`` epochs without improving.

    Args:
        xs: ``[l, n, d]`` float32 standardised features.
        targets: ``[n, K]`` 0/1 targets (see :func:`lmms_probe_tasks.probe.targets.encode_targets`).
        train_rows: ``[n]`` bool, rows to train on.
        dev_rows: ``[n]`` bool, rows for early stopping (disjoint from ``train_rows``).
        loss: ``softmax`` or ``sigmoid``.
        config: MLP settings.
        seed: Seeds the initialisation and the minibatch order.

    Returns:
        The per-layer MLPs at their best dev epoch.

    Raises:
        ValueError: Empty or overlapping train/dev rows.
    """
    nl, n, d = xs.shape
    train_rows, dev_rows = as_row_mask(train_rows, n), as_row_mask(dev_rows, n)
    if not train_rows.any() or not dev_rows.any():
        raise ValueError(
            f"MLP probe needs train and dev rows; got {int(train_rows.sum())} train, {int(dev_rows.sum())} dev"
        )
    if (train_rows & dev_rows).any():
        raise ValueError("MLP train and dev rows overlap; the dev split must be held out")
    dev = xs.device
    t = torch.as_tensor(np.asarray(targets, dtype=np.float32), device=dev)
    gen = torch.Generator().manual_seed(int(seed))
    params = _init_params(nl, d, config.hidden, t.shape[1], gen, dev)
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    train_idx = torch.as_tensor(np.flatnonzero(train_rows), device=dev)
    dev_idx = np.flatnonzero(dev_rows)
    best = [p.detach().clone() for p in params]
    best_loss = torch.full((nl,), math.inf, device=dev)
    best_epoch = torch.zeros(nl, dtype=torch.int64, device=dev)
    bad_epochs = torch.zeros(nl, dtype=torch.int64, device=dev)
    for epoch in range(1, config.max_epochs + 1):
        order = train_idx[torch.randperm(train_idx.numel(), generator=gen).to(dev)]
        _train_epoch(xs, t, order, params, opt, loss, config.batch_size)
        with torch.no_grad():
            dev_loss = _dev_loss(xs, t, dev_idx, params, loss)
            improved = dev_loss < best_loss - 1e-6
            for b, p in zip(best, params, strict=True):
                b.copy_(torch.where(improved.view(nl, 1, 1), p.detach(), b))
            best_loss = torch.where(improved, dev_loss, best_loss)
            best_epoch = torch.where(improved, torch.full_like(best_epoch, epoch), best_epoch)
            bad_epochs = torch.where(improved, torch.zeros_like(bad_epochs), bad_epochs + 1)
        if bool((bad_epochs >= config.patience).all()):
            break
    return BatchedMLP(*best, best_epoch=best_epoch.cpu().numpy(), loss=loss)


def _init_params(nl: int, d: int, h: int, k: int, gen: torch.Generator, device: torch.device) -> list[torch.Tensor]:
    """``[w1, b1, w2, b2]`` drawn as ``nn.Linear`` initialises them, one set per layer."""

    def uniform(shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
        bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation
        return ((torch.rand(shape, generator=gen) * 2 - 1) * bound).to(device).requires_grad_(True)

    return [uniform((nl, d, h), d), uniform((nl, 1, h), d), uniform((nl, h, k), h), uniform((nl, 1, k), h)]


def _train_epoch(
    xs: torch.Tensor,
    t: torch.Tensor,
    order: torch.Tensor,
    params: list[torch.Tensor],
    opt: torch.optim.Optimizer,
    loss: LossKind,
    batch_size: int,
) -> None:
    """One pass of Adam over the training rows ``order`` (``[m]`` int), ``batch_size`` rows a step."""
    for r0 in range(0, order.numel(), batch_size):
        idx = order[r0 : r0 + batch_size]
        z = _mlp_forward(xs[:, idx], *params)
        # Summing per-layer mean losses keeps each layer's gradient its own.
        batch_loss = row_nll(z, t[idx][None], loss).mean(dim=1).sum()
        opt.zero_grad(set_to_none=True)
        batch_loss.backward()
        opt.step()


def _dev_loss(
    xs: torch.Tensor, t: torch.Tensor, dev_idx: np.ndarray, params: list[torch.Tensor], loss: LossKind
) -> torch.Tensor:
    """Mean dev log-loss per layer, ``[l]``."""
    dev_loss = torch.zeros(xs.shape[0], device=xs.device)
    for r0 in range(0, dev_idx.size, ROW_BLOCK):
        idx = torch.as_tensor(dev_idx[r0 : r0 + ROW_BLOCK], device=xs.device)
        dev_loss += row_nll(_mlp_forward(xs[:, idx], *params), t[idx][None], loss).sum(dim=1)
    dev_loss /= dev_idx.size
    return dev_loss


__all__ = ["BatchedMLP", "MLPConfig", "fit_mlp"]
