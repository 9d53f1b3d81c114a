"""Minimises many independent L2 logistic objectives at once with a preconditioned, batched L-BFGS.

Problems are laid out on axis 1 of every parameter-shaped tensor (``[l, G, K, d+1]``:
layers, problems, logits, weights plus intercept) and axis 2 of the logits
(``[l, n, G, K]``). Every (layer, problem) keeps its own L-BFGS memory, Armijo step and
stopping test, so a solution does not depend on what shares its batch. The objective
of :func:`solve` is the mean-scaled one described in :mod:`lmms_probe_tasks.probe.logreg`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lmms_probe_tasks.probe.features import ROW_BLOCK
from lmms_probe_tasks.probe.targets import LossKind

#: L-BFGS memory (curvature pairs kept per problem).
HISTORY = 10
#: Armijo sufficient-decrease constant.
_C1 = 1e-4
#: Halvings of the step tried before a problem counts as stalled.
_MAX_HALVINGS = 30
#: Iterations between exact recomputations of the logits (the incremental update accumulates rounding).
_REFRESH_EVERY = 25


def solve(
    xs: torch.Tensor,
    targets: torch.Tensor,
    wn: torch.Tensor,
    lam: torch.Tensor,
    lam_b: torch.Tensor,
    ng: torch.Tensor,
    *,
    loss: LossKind,
    max_iter: int,
    tol: float,
    precondition: bool,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Run batched L-BFGS from zero on every (layer, problem) until it meets ``tol``, stalls or hits ``max_iter``.

    Args:
        xs: ``[l, n, d]`` float32 standardised features.
        targets: ``[n, G, K]`` float32 0/1 targets.
        wn: ``[n, G]`` float32 row weights, each column summing to 1.
        lam: ``[l, G]`` float32 weight-penalty coefficients.
        lam_b: ``[l, G]`` float32 intercept-penalty coefficients (0: unpenalised).
        ng: ``[G]`` float32 total row weight of each problem (before normalising).
        loss: ``softmax`` or ``sigmoid``.
        max_iter: Iteration cap per problem.
        tol: Max-abs gradient at which a problem stops.
        precondition: Use the covariance-bound preconditioner (:class:`_Preconditioner`).

    Returns:
        ``(theta, n_iter, converged)``: ``[l, G, K, d + 1]`` float32 parameters,
        ``[l, G]`` int iterations and ``[l, G]`` bool convergence flags.
    """
    nl, _, d = xs.shape
    g, k = targets.shape[1], targets.shape[2]
    theta = torch.zeros(nl, g, k, d + 1, device=xs.device)
    pc = _Preconditioner(xs, loss, lam, lam_b, ng) if precondition else None
    return _LBFGS(xs, targets, wn, lam, lam_b, theta, loss, pc).run(max_iter, tol)


class _Preconditioner:
    """``M^-1`` for every (layer, problem): ``M = c * Cov + lam * I`` on weights, ``c + lam_b`` on intercepts.

    ``c * Cov`` bounds the data Hessian of the mean-scaled loss (Böhning 1992: 1/2 for the
    softmax, 1/4 for a sigmoid), so ``M^-1 g`` is a safe, nearly Newton step. One
    eigendecomposition of the layer's feature covariance serves every C. Problems fitted on
    fewer than a quarter of the rows (small MDL blocks) keep the identity: their covariance
    is not the layer's.
    """

    def __init__(self, xs: torch.Tensor, loss: LossKind, lam: torch.Tensor, lam_b: torch.Tensor, ng: torch.Tensor):
        nl, n, d = xs.shape
        gram = torch.zeros(nl, d, d, device=xs.device)
        for r0 in range(0, n, ROW_BLOCK):  # row blocks: any operand copy stays block-sized
            block = xs[:, r0 : r0 + ROW_BLOCK]
            gram.baddbmm_(block.transpose(1, 2), block)
        evals, self.vecs = torch.linalg.eigh(gram / n)  # [l, d], [l, d, d]
        self.c = 0.5 if loss == "softmax" else 0.25
        self.evals = evals.clamp_min(0.0)
        self.set_problems(lam, lam_b, ng >= 0.25 * n)

    def set_problems(self, lam: torch.Tensor, lam_b: torch.Tensor, active: torch.Tensor) -> None:
        """Per-problem scales: ``lam``, ``lam_b`` ``[l, G]``, ``active`` ``[G]`` bool."""
        self.lam, self.lam_b, self.active = lam, lam_b, active
        self.inv = 1.0 / (self.c * self.evals[:, None, None, :] + lam[:, :, None, None])  # [l, G, 1, d]
        self.inv_b = 1.0 / (self.c + lam_b)  # [l, G]

    def keep(self, keep: torch.Tensor) -> None:
        """Drop retired problem columns (``keep``: ``[G]`` bool)."""
        self.set_problems(self.lam[:, keep], self.lam_b[:, keep], self.active[keep])

    def apply(self, q: torch.Tensor) -> torch.Tensor:
        """``M^-1 q`` for active problems, ``q`` for the others (``[l, G, K, d+1]``)."""
        nl, g, k, d1 = q.shape
        d = d1 - 1
        rot = torch.matmul(q[..., :d].reshape(nl, g * k, d), self.vecs).view(nl, g, k, d) * self.inv
        out = torch.empty_like(q)
        out[..., :d] = torch.matmul(rot.reshape(nl, g * k, d), self.vecs.transpose(1, 2)).view(nl, g, k, d)
        out[..., d] = q[..., d] * self.inv_b[..., None]
        return torch.where(self.active[None, :, None, None], out, q)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Inner product per (layer, problem) of two ``[l, G, K, d+1]`` tensors: ``[l, G]``."""
    return (a * b).sum(dim=(2, 3))


def _logsumexp_last(z: torch.Tensor) -> torch.Tensor:
    """``logsumexp`` over a short last axis, unrolled: about twice as fast on CPU as torch's for K <= 8."""
    k = z.shape[-1]
    if k > 8:
        return torch.logsumexp(z, dim=-1)
    parts = [z[..., j] for j in range(k)]
    top = parts[0]
    for part in parts[1:]:
        top = torch.maximum(top, part)
    acc = (parts[0] - top).exp_()
    for part in parts[1:]:
        acc += (part - top).exp_()
    return acc.log_().add_(top)


@dataclass
class _State:
    """The iterate of every live problem column, and its L-BFGS memory.

    Attributes:
        z: ``[l, n, G, K]`` logits at the current parameters.
        rows0: ``[l, n, G]`` per-row non-linear loss part at ``z``.
        grad: ``[l, G, K, d+1]`` gradient.
        gmax: ``[l, G]`` max-abs gradient.
        done: ``[l, G]`` bool, problem finished (converged, stalled).
        n_iter: ``[l, G]`` int iterations so far.
        gamma: ``[l, G]`` scale of the initial inverse Hessian.
        s_hist: Steps, newest last.
        y_hist: Gradient changes, newest last.
        rho_hist: ``1 / (s . y)`` (0 for a rejected pair), newest last.
    """

    z: torch.Tensor
    rows0: torch.Tensor
    grad: torch.Tensor
    gmax: torch.Tensor
    done: torch.Tensor
    n_iter: torch.Tensor
    gamma: torch.Tensor
    s_hist: list[torch.Tensor]
    y_hist: list[torch.Tensor]
    rho_hist: list[torch.Tensor]

    def keep(self, keep: torch.Tensor) -> None:
        """Keep only the problem columns ``keep`` (``[G]`` bool)."""
        self.z, self.rows0 = self.z[:, :, keep], self.rows0[:, :, keep]
        self.grad, self.gamma = self.grad[:, keep], self.gamma[:, keep]
        self.done, self.n_iter, self.gmax = self.done[:, keep], self.n_iter[:, keep], self.gmax[:, keep]
        self.s_hist = [h[:, keep] for h in self.s_hist]
        self.y_hist = [h[:, keep] for h in self.y_hist]
        self.rho_hist = [h[:, keep] for h in self.rho_hist]


class _LBFGS:
    """Batched L-BFGS over independent (layer, problem) logistic objectives.

    A problem column that has converged for every layer is dropped from all tensors, so
    the remaining iterations cost less.
    """

    def __init__(
        self,
        xs: torch.Tensor,
        targets: torch.Tensor,
        wn: torch.Tensor,
        lam: torch.Tensor,
        lam_b: torch.Tensor,
        theta: torch.Tensor,
        loss: LossKind,
        pc: _Preconditioner | None = None,
    ) -> None:
        self.xs, self.loss, self.pc = xs, loss, pc
        nl, g = lam.shape
        self.out_theta = theta.clone()
        self.out_iter = torch.zeros(nl, g, dtype=torch.int64, device=xs.device)
        self.out_conv = torch.zeros(nl, g, dtype=torch.bool, device=xs.device)
        self.cols = torch.arange(g, device=xs.device)
        self.t, self.wn, self.lam, self.lam_b, self.theta = targets, wn, lam, lam_b, theta
        self.tw = targets * wn[..., None]  # [n, G, K] weighted targets: the loss term linear in z

    # -- objective pieces -------------------------------------------------------
    def forward(self, p: torch.Tensor) -> torch.Tensor:
        """Logits ``[l, n, G, K]`` of parameters ``p`` (``[l, G, K, d+1]``)."""
        nl, n, d = self.xs.shape
        g, k = p.shape[1], p.shape[2]
        if g * k >= 8:
            # Many logits: W @ X^T then one transpose copy beat X @ W^T by ~1.5x on CPU (measured).
            zt = torch.baddbmm(
                p[..., d].reshape(nl, g * k, 1), p[..., :d].reshape(nl, g * k, d), self.xs.transpose(1, 2)
            )
            return zt.transpose(1, 2).reshape(nl, n, g, k)
        wt = p[..., :d].reshape(nl, g * k, d).transpose(1, 2)
        return (torch.bmm(self.xs, wt) + p[..., d].reshape(nl, 1, g * k)).view(nl, n, g, k)

    def rows(self, z: torch.Tensor) -> torch.Tensor:
        """Per-row non-linear loss part ``[l, n, G]``: lse of the logits, or summed softplus."""
        if self.loss == "softmax":
            return _logsumexp_last(z)
        return F.softplus(z).sum(-1)

    def linear(self, z: torch.Tensor) -> torch.Tensor:
        """Weighted sum of ``z . target`` per problem, ``[l, G]``."""
        return (z * self.tw).sum(dim=(1, 3))

    def penalty_terms(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """``sum lam/2 * p . q`` over weights plus intercepts, ``[l, G]``."""
        d = self.xs.shape[2]
        w_part = (p[..., :d] * q[..., :d]).sum(dim=(2, 3))
        b_part = (p[..., d] * q[..., d]).sum(-1)
        return 0.5 * (self.lam * w_part + self.lam_b * b_part)

    def gradient(self, z: torch.Tensor, lse: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Gradient ``[l, G, K, d+1]`` at logits ``z`` (``lse``: :meth:`rows` of ``z``, used for softmax)."""
        nl, n, d = self.xs.shape
        g, k = p.shape[1], p.shape[2]
        if self.loss == "softmax":
            # exp(z - lse) is several times faster than torch.softmax over a short last axis on CPU.
            prob = torch.exp(z - lse[..., None])
        else:
            prob = torch.sigmoid(z)
        dz = prob.mul_(self.wn[..., None]).sub_(self.tw)
        gw = torch.bmm(dz.reshape(nl, n, g * k).transpose(1, 2), self.xs).view(nl, g, k, d)
        out = torch.empty_like(p)
        out[..., :d] = gw + self.lam[..., None, None] * p[..., :d]
        out[..., d] = dz.sum(1) + self.lam_b[..., None] * p[..., d]
        return out

    # -- bookkeeping -------------------------------------------------------------
    def _retire(self, keep: torch.Tensor, n_iter: torch.Tensor, converged: torch.Tensor) -> None:
        """Store the finished columns and drop them from every state tensor."""
        gone = ~keep
        cols = self.cols[gone]
        self.out_theta[:, cols] = self.theta[:, gone]
        self.out_iter[:, cols] = n_iter[:, gone]
        self.out_conv[:, cols] = converged[:, gone]
        self.cols = self.cols[keep]
        for name in ("theta", "lam", "lam_b"):
            setattr(self, name, getattr(self, name)[:, keep])
        self.t, self.tw, self.wn = self.t[:, keep], self.tw[:, keep], self.wn[:, keep]
        if self.pc is not None:
            self.pc.keep(keep)

    # -- the iteration -------------------------------------------------------------
    def run(self, max_iter: int, tol: float) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """Iterate until every problem meets ``tol``, stalls, or hits ``max_iter``; see :func:`solve`."""
        st = self._start(tol)
        for it in range(max_iter):
            col_done = st.done.all(0)
            if bool(col_done.all()):
                break
            if bool(col_done.any()):
                keep = ~col_done
                self._retire(keep, st.n_iter, st.gmax <= tol)
                st.keep(keep)
            direction, slope = self._direction(st)
            step, zd, stalled = self._line_search(st, direction, slope)
            self._advance(st, it, direction, step, zd, stalled, tol)
        self._retire(torch.zeros_like(self.cols, dtype=torch.bool), st.n_iter, st.gmax <= tol)
        return self.out_theta, self.out_iter.cpu().numpy(), self.out_conv.cpu().numpy()

    def _start(self, tol: float) -> _State:
        """Logits, gradient and first step scale at the starting point."""
        z = self.forward(self.theta)
        rows0 = self.rows(z)
        grad = self.gradient(z, rows0, self.theta)
        gmax = grad.abs().amax(dim=(2, 3))
        done = gmax <= tol
        n_iter = torch.zeros_like(done, dtype=torch.int64)
        gamma = 1.0 / grad.flatten(2).norm(dim=2).clamp_min(1.0)  # first step: unit length at most
        if self.pc is not None:  # a preconditioned first step is a bounded-Hessian Newton step
            gamma = torch.where(self.pc.active[None, :], torch.ones_like(gamma), gamma)
        return _State(z, rows0, grad, gmax, done, n_iter, gamma, [], [], [])

    def _direction(self, st: _State) -> tuple[torch.Tensor, torch.Tensor]:
        """Search direction ``[l, G, K, d+1]`` and its slope ``[l, G]`` (zero for finished problems)."""
        # Two-loop recursion, one history per (layer, problem).
        q = st.grad.clone()
        alphas = []
        for s_i, y_i, rho_i in zip(reversed(st.s_hist), reversed(st.y_hist), reversed(st.rho_hist), strict=True):
            a_i = rho_i * _dot(s_i, q)
            q -= a_i[..., None, None] * y_i
            alphas.append(a_i)
        if self.pc is not None:
            q = self.pc.apply(q)
        q *= st.gamma[..., None, None]
        for (s_i, y_i, rho_i), a_i in zip(
            zip(st.s_hist, st.y_hist, st.rho_hist, strict=True), reversed(alphas), strict=True
        ):
            b_i = rho_i * _dot(y_i, q)
            q += (a_i - b_i)[..., None, None] * s_i
        direction = q.neg_()
        slope = _dot(st.grad, direction)
        bad = slope >= 0  # rounding can break descent; fall back to steepest descent
        if bool(bad.any()):
            direction = torch.where(bad[..., None, None], -st.grad * st.gamma[..., None, None], direction)
            slope = torch.where(bad, _dot(st.grad, direction), slope)
        direction = torch.where(st.done[..., None, None], torch.zeros_like(direction), direction)
        slope = torch.where(st.done, torch.zeros_like(slope), slope)
        return direction, slope

    def _line_search(
        self, st: _State, direction: torch.Tensor, slope: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Armijo backtracking per problem.

        Along the step everything is cheap: logits move linearly (one matmul for X @ D),
        the target term is linear in t and the penalty quadratic. The decrease is summed
        from per-row differences, which keeps it accurate in float32 near the optimum.

        Returns:
            ``(step, zd, stalled)``: ``[l, G]`` accepted step (0 for finished or stalled
            problems), ``[l, n, G, K]`` logits of the direction, ``[l, G]`` bool no decrease
            left at float32 precision.
        """
        z = st.z
        zd = self.forward(direction)
        lin1 = self.linear(zd)
        pen1 = 2 * self.penalty_terms(self.theta, direction)
        pen2 = self.penalty_terms(direction, direction)
        step = torch.ones_like(slope)
        accepted = st.done.clone()
        for _ in range(_MAX_HALVINGS):
            t = step[:, None, :, None]
            trial = z + zd if bool((step == 1).all()) else torch.addcmul(z, t, zd)
            change = ((self.rows(trial) - st.rows0) * self.wn).sum(1) - step * lin1 + step * pen1 + step**2 * pen2
            accepted |= change <= _C1 * step * slope
            if bool(accepted.all()):
                break
            step = torch.where(accepted, step, step * 0.5)
        stalled = ~accepted
        step = torch.where(accepted & ~st.done, step, torch.zeros_like(step))
        return step, zd, stalled

    def _advance(
        self,
        st: _State,
        it: int,
        direction: torch.Tensor,
        step: torch.Tensor,
        zd: torch.Tensor,
        stalled: torch.Tensor,
        tol: float,
    ) -> None:
        """Take the step, then update logits, gradient, curvature memory and the stopping test."""
        s = step[..., None, None] * direction
        self.theta = self.theta + s
        if (it + 1) % _REFRESH_EVERY == 0:
            st.z = self.forward(self.theta)
        else:
            st.z = torch.addcmul(st.z, step[:, None, :, None], zd)
        st.rows0 = self.rows(st.z)
        new_grad = self.gradient(st.z, st.rows0, self.theta)
        y = new_grad - st.grad
        sy, yy = _dot(s, y), _dot(y, y)
        valid = (sy > 1e-10 * yy.clamp_min(1e-30)) & (step > 0)
        if self.pc is not None:  # scale H0 = gamma * M^-1 in the preconditioned metric
            yy = torch.where(self.pc.active[None, :], _dot(y, self.pc.apply(y)), yy)
        rho = torch.where(valid, 1.0 / torch.where(valid, sy, torch.ones_like(sy)), torch.zeros_like(sy))
        st.gamma = torch.where(valid, sy / yy.clamp_min(1e-30), st.gamma)
        st.s_hist.append(s)
        st.y_hist.append(y)
        st.rho_hist.append(rho)
        if len(st.s_hist) > HISTORY:
            st.s_hist.pop(0), st.y_hist.pop(0), st.rho_hist.pop(0)
        st.grad = new_grad
        st.n_iter += (~st.done).long()
        st.gmax = st.grad.abs().amax(dim=(2, 3))
        st.done = st.done | stalled | (st.gmax <= tol)


__all__ = ["HISTORY", "solve"]
