"""Runs the full probing protocol on all layers at once: dev split, L2 choice, seeds, CIs, controls, MDL.

Pure functions on arrays (no model, no lmms-eval). :func:`run_protocol` takes a task's
features of every layer, ``x`` ``[n_layers, n, d]``, and returns a
:class:`ProtocolResult` with one row per layer. The protocol follows SentEval and
the probing literature (see ``shared/notes/data-and-models.md``, "Probing practice"):

1. **Dev split.** For each of ``n_seeds`` seeds, a dev split of ``dev_fraction`` of
   probe-train is carved out by *group* (e.g. image id), so no group is in both.
2. **L2 choice (linear probe).** For every layer, seed and label set, logistic
   regression is fitted on train-minus-dev for every ``C`` of ``c_grid`` (all in one
   batched solve, see :mod:`lmms_probe_tasks.fit`); the ``C`` with the best dev
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
probe every score is NaN and ``reason`` says why (``probe.unusable_reason``).
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np
import torch

from lmms_probe_tasks.fit import (
    EncodedTargets,
    MLPConfig,
    encode_targets,
    fit_logreg,
    fit_mlp,
    iter_layer_chunks,
    log_proba,
)
from lmms_probe_tasks.probe import TARGET_KINDS, TargetKind, unusable_reason

ProbeKind = Literal["linear", "mlp"]
PROBE_KINDS: tuple[str, ...] = ("linear", "mlp")
REFITS: tuple[str, ...] = ("train+dev", "train")
BOOTSTRAP_UNITS: tuple[str, ...] = ("doc", "group")
#: Block ends of the online code, as fractions of probe-train (Voita & Titov 2020).
MDL_FRACTIONS: tuple[float, ...] = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.0625, 0.125, 0.25, 0.5, 1.0)
#: Half-decade grid of C (scikit-learn's inverse L2 strength), 1e-4 .. 1e2.
PAPER_C_GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 2, 13))
FAST_C_GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)

# Seed streams: each random choice draws from its own stream, so adding seeds or
# controls never changes the dev split of an existing seed.
_DEV, _CONTROL, _SHUFFLE, _MDL, _MLP, _BOOT = range(6)


# ------------------------------------------------------------------ configuration
def _invalid(name: str, value: Any, valid: str, example: str) -> ValueError:
    return ValueError(
        f"ProtocolConfig {name}={value!r} is invalid; valid: {valid}. Fix: e.g. "
        f"ProtocolConfig.from_preset('paper', {name}={example})"
    )


@dataclass(frozen=True)
class ProtocolConfig:
    """Settings of :func:`run_protocol`; the defaults are the ``paper`` preset.

    Attributes:
        preset: Name of the preset the settings came from (recorded, not interpreted).
        probe: ``linear`` (logistic regression, L2 chosen on dev) or ``mlp``.
        c_grid: Increasing grid of scikit-learn's ``C`` (inverse L2 strength).
        n_seeds: Seeds (dev split, control labels, shuffle, MLP init).
        seed: Base seed.
        dev_fraction: Share of probe-train docs carved out as dev (by group).
        refit: ``train+dev`` (refit the chosen C on all probe-train) or ``train``.
        n_bootstrap: Bootstrap resamples of probe-test (0: no CI, no best-layer distribution).
        ci_level: Coverage of the percentile bootstrap interval.
        bootstrap_unit: Resample test ``doc`` s or their ``group`` s (cluster bootstrap).
        controls: Run the control task (needs ``types``) and the shuffled-label control.
        mdl: Compute the online codelength.
        mdl_C: C of the MDL block models; None: each layer's chosen C (linear) or 1.0 (mlp).
        max_iter: L-BFGS iteration cap per fit.
        tol: L-BFGS gradient tolerance (scikit-learn's ``tol``).
        layer_chunk: Layers converted to float32 at a time (memory: ``layer_chunk * n * d * 4`` B).
        device: Torch device of the solvers (``cpu``, ``cuda``, ``cuda:1``).
        batch_mb: Budget for the solver's logit temporaries; problems beyond it are
            solved in several batches.
        mlp: Settings of the MLP probe.
    """

    preset: str = "paper"
    probe: ProbeKind = "linear"
    c_grid: tuple[float, ...] = PAPER_C_GRID
    n_seeds: int = 3
    seed: int = 0
    dev_fraction: float = 0.2
    refit: Literal["train+dev", "train"] = "train+dev"
    n_bootstrap: int = 1000
    ci_level: float = 0.95
    bootstrap_unit: Literal["doc", "group"] = "doc"
    controls: bool = True
    mdl: bool = True
    mdl_C: float | None = None
    max_iter: int = 1000
    tol: float = 1e-4
    layer_chunk: int = 4
    device: str = "cpu"
    batch_mb: int = 1024
    mlp: MLPConfig = field(default_factory=MLPConfig)

    def __post_init__(self) -> None:
        def is_int(v: Any) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)

        if not isinstance(self.preset, str):
            raise _invalid("preset", self.preset, "a name such as " + ", ".join(PRESETS), "'paper'")
        if self.probe not in PROBE_KINDS:
            raise _invalid("probe", self.probe, ", ".join(PROBE_KINDS), "'linear'")
        try:
            grid = tuple(float(c) for c in self.c_grid)
        except (TypeError, ValueError):
            grid = ()
        if (
            not grid
            or not all(math.isfinite(c) and c > 0 for c in grid)
            or any(b <= a for a, b in zip(grid[:-1], grid[1:], strict=True))
        ):
            raise _invalid(
                "c_grid", self.c_grid, "a non-empty, strictly increasing tuple of positive C values", "(0.01, 0.1, 1.0)"
            )
        object.__setattr__(self, "c_grid", grid)
        if not (is_int(self.n_seeds) and self.n_seeds >= 1):
            raise _invalid("n_seeds", self.n_seeds, "an integer >= 1", "3")
        if not (is_int(self.seed) and self.seed >= 0):
            raise _invalid("seed", self.seed, "an integer >= 0", "0")
        if not (is_num(self.dev_fraction) and 0 < self.dev_fraction <= 0.5):
            raise _invalid("dev_fraction", self.dev_fraction, "a number in (0, 0.5]", "0.2")
        if self.refit not in REFITS:
            raise _invalid("refit", self.refit, ", ".join(REFITS), "'train+dev'")
        if not (is_int(self.n_bootstrap) and self.n_bootstrap >= 0):
            raise _invalid("n_bootstrap", self.n_bootstrap, "an integer >= 0 (0 disables CIs)", "1000")
        if not (is_num(self.ci_level) and 0 < self.ci_level < 1):
            raise _invalid("ci_level", self.ci_level, "a number in (0, 1)", "0.95")
        if self.bootstrap_unit not in BOOTSTRAP_UNITS:
            raise _invalid("bootstrap_unit", self.bootstrap_unit, ", ".join(BOOTSTRAP_UNITS), "'doc'")
        for name in ("controls", "mdl"):
            if not isinstance(getattr(self, name), bool):
                raise _invalid(name, getattr(self, name), "True or False", "True")
        if self.mdl_C is not None and not (is_num(self.mdl_C) and self.mdl_C > 0):
            raise _invalid("mdl_C", self.mdl_C, "None or a positive number", "None")
        if not (is_int(self.max_iter) and self.max_iter >= 1):
            raise _invalid("max_iter", self.max_iter, "an integer >= 1", "1000")
        if not (is_num(self.tol) and self.tol > 0):
            raise _invalid("tol", self.tol, "a positive number", "1e-4")
        if not (is_int(self.layer_chunk) and self.layer_chunk >= 1):
            raise _invalid("layer_chunk", self.layer_chunk, "an integer >= 1", "4")
        if not (is_int(self.batch_mb) and self.batch_mb >= 16):
            raise _invalid("batch_mb", self.batch_mb, "an integer >= 16 (MiB)", "1024")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise _invalid("device", self.device, "a torch device string: cpu, cuda, cuda:0, ...", "'cpu'") from None
        if not isinstance(self.mlp, MLPConfig):
            raise _invalid("mlp", self.mlp, "an MLPConfig", "MLPConfig(hidden=256)")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ProtocolConfig:
        """Build the settings of a named preset, with some fields overridden.

        Presets: ``fast`` (smoke runs: 5-value C grid, 1 seed, 100 bootstrap
        resamples, 300 L-BFGS iterations) and ``paper`` (reported numbers: 13-value C
        grid 1e-4..1e2, 3 seeds, 1000 resamples, 1000 iterations).

        Args:
            name: ``fast`` or ``paper``.
            **overrides: ProtocolConfig fields to change, e.g. ``n_seeds=5``.

        Returns:
            The settings.

        Raises:
            ValueError: Unknown preset or field, or an invalid value.
        """
        if name not in PRESETS:
            close = difflib.get_close_matches(str(name), PRESETS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown probe preset {name!r}.{hint} Valid: {', '.join(PRESETS)}. "
                "Fix: ProtocolConfig.from_preset('fast') for smoke runs, 'paper' for reported numbers"
            )
        known = [f.name for f in fields(cls)]
        for key in overrides:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown ProtocolConfig field {key!r}.{hint} Valid: {', '.join(known)}")
        return cls(**{**PRESETS[name], "preset": name, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as plain data (for JSON)."""
        out = asdict(self)
        out["c_grid"] = list(self.c_grid)
        return out


#: Named settings; ``paper`` equals the dataclass defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {
        "c_grid": FAST_C_GRID,
        "n_seeds": 1,
        "n_bootstrap": 100,
        "max_iter": 300,
        "mlp": MLPConfig(hidden=128, max_epochs=30, patience=3),
    },
    "paper": {
        "c_grid": PAPER_C_GRID,
        "n_seeds": 3,
        "n_bootstrap": 1000,
        "max_iter": 1000,
        "mlp": MLPConfig(),
    },
}


# ------------------------------------------------------------------ splits and control labels
def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def _as_keys(values: np.ndarray | Sequence[Any], n: int, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have one entry per doc, shape ({n},); got {arr.shape}")
    if arr.dtype == object:
        arr = arr.astype(str)  # mixed Python objects: compare them as text
    return arr


def group_dev_split(
    is_train: np.ndarray,
    groups: np.ndarray | None,
    *,
    dev_fraction: float,
    seed: int | Sequence[int],
) -> np.ndarray:
    """Carve a dev split out of probe-train so that no group is in both dev and train.

    Whole groups, in a seeded random order, go to dev until dev holds at least
    ``dev_fraction`` of the probe-train docs; at least one group stays on each side.

    Args:
        is_train: ``[n]`` bool, True for probe-train docs.
        groups: ``[n]`` group keys (str or int, e.g. image id); None: every doc its own group.
        dev_fraction: Target share of probe-train docs in dev, in (0, 1).
        seed: Seed (or seed sequence) of the group order.

    Returns:
        ``[n]`` bool, True for dev docs (a subset of probe-train).

    Raises:
        ValueError: Fewer than two groups among the probe-train docs.
    """
    is_train = np.asarray(is_train, dtype=bool)
    train_idx = np.flatnonzero(is_train)
    keys = train_idx if groups is None else _as_keys(groups, is_train.size, "groups")[train_idx]
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    if uniq.size < 2:
        raise ValueError(
            f"cannot carve a group-disjoint dev split: probe-train has {uniq.size} group(s) "
            f"({train_idx.size} docs); need >= 2. Fix: pass finer groups or more probe-train docs"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(uniq.size)
    filled = np.cumsum(counts[order])
    n_dev_groups = int(np.searchsorted(filled, dev_fraction * train_idx.size)) + 1
    n_dev_groups = min(max(n_dev_groups, 1), uniq.size - 1)
    dev_group = np.zeros(uniq.size, bool)
    dev_group[order[:n_dev_groups]] = True
    is_dev = np.zeros(is_train.size, bool)
    is_dev[train_idx[dev_group[inverse]]] = True
    return is_dev


def control_task_labels(
    y: np.ndarray, types: np.ndarray, is_train: np.ndarray, *, seed: int | Sequence[int]
) -> np.ndarray:
    """Hewitt & Liang (2019) control labels: one random label per type, fixed for the type.

    Each distinct type draws the label of a random probe-train doc, i.e. a sample of
    the empirical probe-train label distribution (a whole label set, multilabel).

    Args:
        y: ``[n]`` int class ids or ``[n, k]`` 0/1 indicators.
        types: ``[n]`` type keys (e.g. hypothesis text, image id).
        is_train: ``[n]`` bool, True for probe-train docs.
        seed: Seed of the draw.

    Returns:
        Control labels, same shape and dtype as ``y``.
    """
    keys = _as_keys(types, y.shape[0], "types")
    _, inverse = np.unique(keys, return_inverse=True)
    train_idx = np.flatnonzero(is_train)
    rng = np.random.default_rng(seed)
    source = train_idx[rng.integers(0, train_idx.size, size=int(inverse.max()) + 1)]
    return y[source[inverse]]


def shuffled_labels(y: np.ndarray, is_train: np.ndarray, *, seed: int | Sequence[int]) -> np.ndarray:
    """Permute the labels of the probe-train docs among themselves; probe-test keeps its labels.

    Args:
        y: ``[n]`` int class ids or ``[n, k]`` 0/1 indicators.
        is_train: ``[n]`` bool.
        seed: Seed of the permutation.

    Returns:
        Labels, same shape and dtype as ``y``.
    """
    out = y.copy()
    train_idx = np.flatnonzero(is_train)
    out[train_idx] = y[np.random.default_rng(seed).permutation(train_idx)]
    return out


# ------------------------------------------------------------------ metrics
def average_precision(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Average precision per class, optionally with per-resample doc weights (bootstrap counts).

    Equals scikit-learn's ``average_precision_score(average=None)`` with unit weights,
    ties included: precision is taken at the end of each group of tied scores.

    Args:
        scores: ``[n, k]`` float scores.
        labels: ``[n, k]`` 0/1 indicators.
        weights: ``[b, n]`` non-negative doc weights (default one row of ones).

    Returns:
        ``[b, k]`` float64 AP; NaN where a class has no positive weight.
    """
    n, k = scores.shape
    w = np.ones((1, n)) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(-scores, axis=0, kind="stable")
    s_sorted = np.take_along_axis(scores, order, 0)
    y_sorted = np.take_along_axis(np.asarray(labels, dtype=np.float64), order, 0)
    is_end = np.ones((n, k), bool)
    is_end[:-1] = s_sorted[1:] != s_sorted[:-1]
    end = np.where(is_end, np.arange(n)[:, None], n)
    end = np.minimum.accumulate(end[::-1], axis=0)[::-1]  # last index of each tie group
    w_sorted = w[:, order]  # [b, n, k]
    pos = w_sorted * y_sorted
    tp = np.take_along_axis(np.cumsum(pos, axis=1), np.broadcast_to(end, w_sorted.shape), 1)
    tot = np.take_along_axis(np.cumsum(w_sorted, axis=1), np.broadcast_to(end, w_sorted.shape), 1)
    precision = np.divide(tp, tot, out=np.zeros_like(tp), where=tot > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * precision).sum(1) / pos.sum(1)


def mean_average_precision(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Mean average precision over the classes with >= 1 positive in ``labels`` (and, per resample, positive weight).

    Args:
        scores: ``[n, k]`` float scores.
        labels: ``[n, k]`` 0/1 indicators.
        weights: ``[b, n]`` doc weights (default one row of ones).

    Returns:
        ``[b]`` float64 mAP (NaN if no class has a positive).
    """
    present = np.asarray(labels).any(axis=0)
    if not present.any():
        return np.full(1 if weights is None else len(weights), np.nan)
    ap = average_precision(scores[:, present], labels[:, present], weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without any positive: NaN
        return np.nanmean(ap, axis=1)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-F1 over the classes in ``y_true`` or ``y_pred`` (as scikit-learn's ``f1_score``)."""
    labels = np.union1d(y_true, y_pred)
    f1 = []
    for c in labels:
        tp = np.sum((y_pred == c) & (y_true == c))
        denom = np.sum(y_pred == c) + np.sum(y_true == c)
        f1.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(f1))


def majority_baseline(y: np.ndarray, is_train: np.ndarray, kind: TargetKind) -> float:
    """Score of a constant predictor on probe-test: no fit.

    Multiclass: accuracy of the most frequent probe-train class (ties: smallest id).
    Multilabel: mAP of a constant score, i.e. the mean test prevalence of the scored classes.
    """
    test = ~np.asarray(is_train, bool)
    if kind == "multiclass":
        classes, counts = np.unique(y[is_train], return_counts=True)
        return float(np.mean(y[test] == classes[np.argmax(counts)]))
    return float(mean_average_precision(np.zeros(y[test].shape), y[test])[0])


def _bootstrap_weights(
    n: int, n_bootstrap: int, rng: np.random.Generator, groups: np.ndarray | None, chunk: int
) -> Iterator[np.ndarray]:
    """Yield ``[b, n]`` resample counts, ``chunk`` resamples at a time."""
    inverse = None
    if groups is not None:
        _, inverse = np.unique(groups, return_inverse=True)
    for b0 in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - b0)
        if inverse is None:
            idx = rng.integers(0, n, size=(b, n))
            counts = np.zeros((b, n))
            np.add.at(counts, (np.repeat(np.arange(b), n), idx.ravel()), 1.0)
        else:
            n_groups = int(inverse.max()) + 1
            gidx = rng.integers(0, n_groups, size=(b, n_groups))
            gcounts = np.zeros((b, n_groups))
            np.add.at(gcounts, (np.repeat(np.arange(b), n_groups), gidx.ravel()), 1.0)
            counts = gcounts[:, inverse]
        yield counts


def bootstrap_layer_scores(
    predictions: np.ndarray,
    y_test: np.ndarray,
    *,
    kind: TargetKind,
    n_bootstrap: int,
    seed: int | Sequence[int] = 0,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Rescore stored probe-test predictions on bootstrap resamples of the test docs.

    Args:
        predictions: Multiclass: ``[S, L, n_test]`` predicted class ids; multilabel:
            ``[S, L, n_test, k]`` scores (S seeds, L layers).
        y_test: ``[n_test]`` class ids or ``[n_test, k]`` 0/1 indicators.
        kind: ``multiclass`` or ``multilabel``.
        n_bootstrap: Resamples.
        seed: Seed of the resampling (the same resamples for every layer and seed).
        groups: ``[n_test]`` group keys to resample groups instead of docs.

    Returns:
        ``[n_bootstrap, L]`` float64 metric per resample and layer, averaged over seeds.
    """
    rng = np.random.default_rng(seed)
    n_seeds, n_layers, n = predictions.shape[:3]
    out = np.empty((n_bootstrap, n_layers))
    row = 0
    if kind == "multiclass":
        correct = (predictions == y_test[None, None]).reshape(n_seeds * n_layers, n).astype(np.float64)
        for counts in _bootstrap_weights(n, n_bootstrap, rng, groups, chunk=max(1, 2**22 // n)):
            acc = (counts @ correct.T) / counts.sum(1, keepdims=True)
            out[row : row + len(counts)] = acc.reshape(-1, n_seeds, n_layers).mean(1)
            row += len(counts)
        return out
    k = y_test.shape[1]
    for counts in _bootstrap_weights(n, n_bootstrap, rng, groups, chunk=max(1, 2**23 // (n * k))):
        acc = np.zeros((len(counts), n_layers))
        for s in range(n_seeds):
            for layer in range(n_layers):
                acc[:, layer] += mean_average_precision(predictions[s, layer], y_test, counts)
        out[row : row + len(counts)] = acc / n_seeds
        row += len(counts)
    return out


def best_layer_distribution(boot: np.ndarray) -> np.ndarray:
    """Probability of each layer being the argmax, over bootstrap resamples; ties split evenly.

    Args:
        boot: ``[B, L]`` scores per resample and layer (NaN: never best).

    Returns:
        ``[L]`` probabilities summing to 1 (all NaN when ``B == 0`` or all scores are NaN).
    """
    if boot.shape[0] == 0 or np.isnan(boot).all():
        return np.full(boot.shape[1], np.nan)
    filled = np.where(np.isnan(boot), -np.inf, boot)
    ties = filled == filled.max(axis=1, keepdims=True)
    return (ties / ties.sum(1, keepdims=True)).mean(0)


# ------------------------------------------------------------------ MDL
def mdl_block_ends(n_train: int) -> np.ndarray:
    """Ends of the online-code blocks for ``n_train`` docs (at least one doc in the first block).

    Returns:
        ``[m]`` strictly increasing int ends, the last equal to ``n_train``.
    """
    ends = np.unique(np.maximum(1, np.round(np.array(MDL_FRACTIONS) * n_train)).astype(np.int64))
    return ends[ends <= n_train]


# ------------------------------------------------------------------ result
@dataclass(frozen=True)
class ProtocolResult:
    """Per-layer results of :func:`run_protocol`; every per-layer field maps layer id -> value.

    Attributes:
        kind: ``multiclass`` or ``multilabel``.
        probe: ``linear`` or ``mlp``.
        metric: ``accuracy`` or ``mAP``.
        layers: Layer ids, in ``x`` order.
        score: Probe-test metric, mean over seeds.
        score_std: Standard deviation over seeds (NaN with one seed).
        ci_low: Lower end of the bootstrap CI of ``score``.
        ci_high: Upper end of the bootstrap CI of ``score``.
        macro_f1: Macro-F1 (multiclass; NaN for multilabel), mean over seeds.
        control_score: Control-task score (NaN without ``types``).
        selectivity: ``score - control_score``.
        shuffled_score: Score of the probe trained on permuted probe-train labels.
        mdl_codelength_bits: Online codelength of the probe-train labels, bits.
        mdl_compression: Uniform codelength / online codelength.
        chosen_C: Median over seeds of the C chosen on dev (NaN for the MLP probe).
        chosen_C_per_seed: The chosen C of every seed.
        converged: Every refit of the layer met the solver tolerance (MLP: True).
        best_layer_prob: Share of bootstrap resamples in which the layer scores highest.
        majority_baseline: Score of the majority-class (constant) predictor.
        mdl_uniform_codelength_bits: Codelength of the labels under the uniform code.
        n_train: Probe-train docs (train + dev).
        n_dev: Dev docs of seed 0.
        n_test: Probe-test docs.
        config: The settings used.
        reason: Why every score is NaN, else None.
        notes: Things a reader should know (skipped controls, fallbacks, overlaps).
    """

    kind: str
    probe: str
    metric: str
    layers: tuple[int, ...]
    score: dict[int, float]
    score_std: dict[int, float]
    ci_low: dict[int, float]
    ci_high: dict[int, float]
    macro_f1: dict[int, float]
    control_score: dict[int, float]
    selectivity: dict[int, float]
    shuffled_score: dict[int, float]
    mdl_codelength_bits: dict[int, float]
    mdl_compression: dict[int, float]
    chosen_C: dict[int, float]
    chosen_C_per_seed: dict[int, tuple[float, ...]]
    converged: dict[int, bool]
    best_layer_prob: dict[int, float]
    majority_baseline: float
    mdl_uniform_codelength_bits: float
    n_train: int
    n_dev: int
    n_test: int
    config: ProtocolConfig
    reason: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def best_layer(self) -> int | None:
        """Layer with the highest mean score (first on ties); None when all are NaN."""
        values = np.array([self.score[layer] for layer in self.layers], dtype=float)
        if values.size == 0 or np.isnan(values).all():
            return None
        return self.layers[int(np.nanargmax(values))]

    def to_rows(self) -> list[dict[str, Any]]:
        """One plain dict per layer (floats, ints, strings), for CSV and JSON.

        ``relative_depth`` is ``layer / max(layers)`` (layer 0: embeddings).
        """
        top = max(self.layers) if self.layers else 0
        per_layer = (
            "score", "score_std", "ci_low", "ci_high", "macro_f1", "control_score", "selectivity",
            "shuffled_score", "mdl_codelength_bits", "mdl_compression", "chosen_C", "best_layer_prob",
        )  # fmt: skip
        rows = []
        for layer in self.layers:
            row: dict[str, Any] = {
                "layer": int(layer),
                "relative_depth": float(layer / top) if top else 0.0,
                "metric": self.metric,
            }
            row.update({name: float(getattr(self, name)[layer]) for name in per_layer})
            row.update(
                {
                    "converged": bool(self.converged[layer]),
                    "majority_baseline": float(self.majority_baseline),
                    "mdl_uniform_codelength_bits": float(self.mdl_uniform_codelength_bits),
                    "n_train": self.n_train,
                    "n_dev": self.n_dev,
                    "n_test": self.n_test,
                    "n_seeds": self.config.n_seeds,
                    "probe": self.probe,
                    "kind": self.kind,
                    "preset": self.config.preset,
                    "reason": self.reason or "",
                }
            )
            rows.append(row)
        return rows


# ------------------------------------------------------------------ the protocol
@dataclass
class _FitSet:
    """One label set under one seed: what a probe is trained and scored on."""

    name: str  # task | control | shuffled
    seed_index: int
    labels: np.ndarray  # [n] or [n, k]
    targets: np.ndarray  # [n, K] float32
    train: np.ndarray  # [n] bool: train minus dev
    dev: np.ndarray  # [n] bool


def _check_inputs(
    x: np.ndarray,
    y: np.ndarray,
    is_train: np.ndarray,
    kind: str,
    groups: np.ndarray | Sequence[Any] | None,
    types: np.ndarray | Sequence[Any] | None,
    layer_ids: Sequence[int] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, tuple[int, ...]]:
    if kind not in TARGET_KINDS:
        raise ValueError(f"kind {kind!r} is not supported; valid: {', '.join(TARGET_KINDS)}")
    if getattr(x, "ndim", 0) != 3:
        raise ValueError(
            f"x must be [n_layers, n_docs, hidden]; got shape {getattr(x, 'shape', None)}. "
            "Fix: np.stack(per_layer_features, axis=0)"
        )
    n_layers, n, _ = x.shape
    y = np.asarray(y)
    expected = "[n] int class ids" if kind == "multiclass" else "[n, k] 0/1 indicators"
    if y.shape[:1] != (n,) or y.ndim != (1 if kind == "multiclass" else 2):
        raise ValueError(f"{kind} y must be {expected} with n={n}; got shape {y.shape}")
    is_train = np.asarray(is_train)
    if is_train.dtype != bool or is_train.shape != (n,):
        raise ValueError(f"is_train must be a [n]={n} bool mask; got dtype {is_train.dtype}, shape {is_train.shape}")
    g = None if groups is None else _as_keys(groups, n, "groups")
    t = None if types is None else _as_keys(types, n, "types")
    ids = tuple(range(n_layers)) if layer_ids is None else tuple(int(i) for i in layer_ids)
    if len(ids) != n_layers or len(set(ids)) != n_layers:
        raise ValueError(f"layer_ids must be {n_layers} distinct ints (one per x layer); got {list(ids)[:8]}...")
    return y, is_train, g, t, ids


def _nan_result(
    kind: str, config: ProtocolConfig, layers: tuple[int, ...], n_train: int, n_test: int, reason: str
) -> ProtocolResult:
    nan = dict.fromkeys(layers, math.nan)
    return ProtocolResult(
        kind=kind,
        probe=config.probe,
        metric="accuracy" if kind == "multiclass" else "mAP",
        layers=layers,
        score=dict(nan),
        score_std=dict(nan),
        ci_low=dict(nan),
        ci_high=dict(nan),
        macro_f1=dict(nan),
        control_score=dict(nan),
        selectivity=dict(nan),
        shuffled_score=dict(nan),
        mdl_codelength_bits=dict(nan),
        mdl_compression=dict(nan),
        chosen_C=dict(nan),
        chosen_C_per_seed={layer: () for layer in layers},
        converged=dict.fromkeys(layers, False),
        best_layer_prob=dict(nan),
        majority_baseline=math.nan,
        mdl_uniform_codelength_bits=math.nan,
        n_train=n_train,
        n_dev=0,
        n_test=n_test,
        config=config,
        reason=reason,
    )


def _problem_batches(n_problems: int, n_layers: int, n_rows: int, n_cols: int, batch_mb: int) -> list[range]:
    """Split problems so the solver's ~6 logit temporaries stay within ``batch_mb``."""
    per_problem = 6 * 4 * n_layers * n_rows * n_cols
    size = max(1, (batch_mb << 20) // max(per_problem, 1))
    return [range(p0, min(p0 + size, n_problems)) for p0 in range(0, n_problems, size)]


def _class_index(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Column of each label in ``classes`` (-1 if absent)."""
    pos = np.searchsorted(classes, labels).clip(0, classes.size - 1)
    return np.where(classes[pos] == labels, pos, -1)


def _logp_true(logp: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather ``logp[..., m, p, idx[m, p]]``: ``[l, m, P, C]`` -> ``[l, m, P]`` (absent class: -inf)."""
    safe = idx.clamp_min(0)
    out = logp.gather(-1, safe.expand(logp.shape[0], *safe.shape).unsqueeze(-1)).squeeze(-1)
    return torch.where(idx >= 0, out, torch.full_like(out, -math.inf))


def _dev_scores(
    z: torch.Tensor,
    sets: list[_FitSet],
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
        idx = torch.as_tensor(np.stack([_class_index(fs.labels[rows], enc.classes) for fs in sets], 1), device=z.device)
        lp = _logp_true(logp, idx)
        acc = ((logp.argmax(-1) == idx) & mask).sum(1) / count
        loss = -(torch.where(mask, lp, torch.zeros_like(lp))).sum(1) / count
        return acc.double().cpu().numpy(), loss.double().cpu().numpy()
    t = torch.as_tensor(np.stack([fs.targets[rows] for fs in sets], axis=1), device=z.device)  # [m, P, k]
    bce = _bce(z, t)
    loss = (torch.where(mask, bce, torch.zeros_like(bce))).sum(1) / count
    prob = logp.exp().cpu().numpy()
    metric = np.full((nl, n_p), np.nan)
    for p, fs in enumerate(sets):
        r = fs.dev[rows]
        for layer in range(nl):
            metric[layer, p] = mean_average_precision(prob[layer, r, p], fs.labels[rows][r])[0]
    return metric, loss.double().cpu().numpy()


def _bce(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Summed binary cross-entropy in nats over the last axis (independent sigmoids)."""
    return (torch.nn.functional.softplus(z) - z * t).sum(-1)


def _test_scores(pred_or_prob: np.ndarray, y_test: np.ndarray, kind: str) -> np.ndarray:
    """Metric per layer: ``[l, n_test]`` class ids or ``[l, n_test, k]`` scores -> ``[l]``."""
    if kind == "multiclass":
        return (pred_or_prob == y_test[None]).mean(1)
    return np.array([mean_average_precision(p, y_test)[0] for p in pred_or_prob])


def _predict(logits: torch.Tensor, enc: EncodedTargets) -> np.ndarray:
    """``[..., K]`` logits -> class ids ``[...]`` (multiclass) or probabilities ``[..., k]``."""
    logp = log_proba(logits, enc.loss, enc.binary)
    if enc.kind == "multiclass":
        return enc.classes[logp.argmax(-1).cpu().numpy()]
    return logp.exp().cpu().numpy().astype(np.float32)


def _select_C(
    xs: torch.Tensor,
    sets: list[_FitSet],
    enc: EncodedTargets,
    config: ProtocolConfig,
) -> np.ndarray:
    """Fit every C of the grid on train-minus-dev and choose one per (set, layer) on dev.

    ``xs`` holds the probe-train rows only (the first ``n`` rows of the sets' arrays).

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
    for batch in _problem_batches(len(problems), nl, n, enc.targets.shape[1], config.batch_mb):
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


def _mdl_codelength(
    xs: torch.Tensor,
    enc: EncodedTargets,
    true_idx: np.ndarray,
    order: np.ndarray,
    ends: np.ndarray,
    layer_c: np.ndarray,
    config: ProtocolConfig,
) -> np.ndarray:
    """Online codelength in bits per layer (``[l]``) of the probe-train labels in ``order``."""
    nl, n, _ = xs.shape
    n_blocks = ends.size - 1
    first = float(ends[0]) * (math.log2(enc.n_classes) if enc.kind == "multiclass" else enc.targets.shape[1])
    if n_blocks == 0:
        return np.full(nl, first)
    weights = np.zeros((n, n_blocks), np.float32)  # xs holds the probe-train rows only
    for b in range(n_blocks):
        weights[order[: ends[b]], b] = 1.0
    c = np.broadcast_to(np.asarray(layer_c, np.float64)[:, None], (nl, n_blocks))
    coded = order[ends[0] :]
    block_of = np.searchsorted(ends, np.arange(ends[0], ends[-1]), side="right") - 1  # model coding each doc
    bits = torch.zeros(nl, dtype=torch.float64, device=xs.device)
    for batch in _problem_batches(n_blocks, nl, n, enc.targets.shape[1], config.batch_mb):
        cols = list(batch)
        model = fit_logreg(
            xs, enc.targets[:n], weights[:, cols], c[:, cols], loss=enc.loss, max_iter=config.max_iter,
            tol=config.tol, intercept_C=c[:, cols],
        )  # fmt: skip
        mine = (block_of >= batch.start) & (block_of < batch.stop)
        docs, doc_block = coded[mine], block_of[mine] - batch.start
        for r0 in range(0, docs.size, 4096):
            rows, blk = docs[r0 : r0 + 4096], torch.as_tensor(doc_block[r0 : r0 + 4096], device=xs.device)
            z = model.logits(xs, rows)  # [l, r, B, K]
            z = z[:, torch.arange(rows.size, device=xs.device), blk]  # [l, r, K]: each doc's own block model
            if enc.kind == "multiclass":
                idx = torch.as_tensor(true_idx[rows], device=xs.device).view(1, -1, 1).expand(nl, -1, 1)
                nats = -log_proba(z, enc.loss, enc.binary).gather(-1, idx).squeeze(-1)
            else:
                nats = _bce(z, torch.as_tensor(enc.targets[rows], device=xs.device))
            bits += nats.double().sum(1) / math.log(2)
    return first + bits.cpu().numpy()


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
    y, is_train, groups, types, layers = _check_inputs(x, y, is_train, kind, groups, types, layer_ids)
    n_layers, n, _ = x.shape
    # Probe-train docs first (keeping their relative order, so splits and draws are unchanged):
    # every fit then reads the view xs[:, :n_train] and no work goes into zero-weight test rows.
    order = np.concatenate([np.flatnonzero(is_train), np.flatnonzero(~is_train)])
    row_order = None if np.array_equal(order, np.arange(n)) else order
    y, is_train = y[order], is_train[order]
    groups = None if groups is None else groups[order]
    types = None if types is None else types[order]
    train_idx, test_idx = np.flatnonzero(is_train), np.flatnonzero(~is_train)
    n_train, n_test = train_idx.size, test_idx.size
    reason = unusable_reason(y, is_train, kind)
    if reason is None:
        keys = train_idx if groups is None else groups[train_idx]
        if np.unique(keys).size < 2:
            reason = f"probe-train has {np.unique(keys).size} group(s); a group-disjoint dev split needs >= 2"
    if reason is not None:
        return _nan_result(kind, config, layers, n_train, n_test, reason)

    notes: list[str] = []
    if groups is not None:
        shared = np.intersect1d(groups[train_idx], groups[test_idx])
        if shared.size:
            notes.append(f"{shared.size} group(s) occur in both probe-train and probe-test (not group-disjoint)")
    enc = encode_targets(y, kind, fit_rows=is_train)
    true_idx = _class_index(y, enc.classes) if kind == "multiclass" else np.empty(0, np.int64)
    label_sets = ["task"]
    if config.controls:
        if types is not None:
            label_sets.append("control")
        else:
            notes.append("control task skipped: no types given (pass e.g. the hypothesis text or image id per doc)")
        label_sets.append("shuffled")

    sets: list[_FitSet] = []
    fallback_seeds: list[int] = []
    for s in range(config.n_seeds):
        is_dev = group_dev_split(is_train, groups, dev_fraction=config.dev_fraction, seed=(config.seed, s, _DEV))
        inner = is_train & ~is_dev
        inner_reason = unusable_reason(y[train_idx], inner[train_idx], kind)
        if inner_reason is not None:
            fallback_seeds.append(s)
            notes.append(f"seed {s}: dev split cannot select C ({inner_reason.replace('probe-test', 'dev')})")
        for name in label_sets:
            if name == "task":
                labels = y
            elif name == "control":
                labels = control_task_labels(y, types, is_train, seed=(config.seed, s, _CONTROL))  # type: ignore[arg-type]
            else:
                labels = shuffled_labels(y, is_train, seed=(config.seed, s, _SHUFFLE))
            targets = encode_targets(labels, kind, classes=enc.classes if kind == "multiclass" else None).targets
            sets.append(_FitSet(name, s, labels, targets, inner, is_dev))
    if config.probe == "mlp" and fallback_seeds:
        return _nan_result(kind, config, layers, n_train, n_test, "; ".join(notes))
    if config.probe == "linear" and fallback_seeds:
        notes.append("those seeds use the C that wins on the other seeds' dev splits where possible, else C=1.0")
    if config.probe == "mlp" and config.mdl:
        c = config.mdl_C if config.mdl_C is not None else 1.0
        notes.append(f"MDL codelength uses the linear probe (C={c}); the MLP probe has no chosen C")

    n_sets, n_seeds = len(sets), config.n_seeds
    task_pred = (
        np.empty((n_seeds, n_layers, n_test), dtype=y.dtype)
        if kind == "multiclass"
        else np.empty((n_seeds, n_layers, n_test, y.shape[1]), dtype=np.float32)
    )
    set_scores = np.full((n_sets, n_layers), np.nan)
    chosen = np.full((n_sets, n_layers), np.nan)
    converged = np.ones((n_sets, n_layers), bool)
    mdl_bits = np.full(n_layers, np.nan)
    mdl_order = np.random.default_rng((config.seed, 0, _MDL)).permutation(train_idx)
    ends = mdl_block_ends(n_train)

    chunks = iter_layer_chunks(x, config.layer_chunk, fit_rows=is_train, device=config.device, row_order=row_order)
    for l0, l1, xs in chunks:
        xs_train = xs[:, :n_train]  # a view: train rows come first
        if config.probe == "linear":
            usable = [j for j, fs in enumerate(sets) if fs.seed_index not in fallback_seeds]
            c_sel = np.ones((n_sets, l1 - l0))
            c_sel[usable] = _select_C(xs_train, [sets[j] for j in usable], enc, config) if usable else 1.0
            for j, fs in enumerate(sets):
                if fs.seed_index in fallback_seeds:
                    same = [u for u in usable if sets[u].name == fs.name]
                    c_sel[j] = np.median(c_sel[same], axis=0) if same else 1.0
            preds, conv = _refit(xs, sets, enc, n_train, c_sel, config)
            chosen[:, l0:l1] = c_sel
            converged[:, l0:l1] = conv
        else:
            preds = []
            for fs in sets:
                mlp_seed = int(np.random.default_rng((config.seed, fs.seed_index, _MLP)).integers(2**31))
                model = fit_mlp(
                    xs_train, fs.targets[:n_train], fs.train[:n_train], fs.dev[:n_train],
                    loss=enc.loss, config=config.mlp, seed=mlp_seed,
                )  # fmt: skip
                preds.append(_predict(model.logits(xs[:, n_train:]), enc))
        for j, fs in enumerate(sets):
            if fs.name == "task":
                task_pred[fs.seed_index, l0:l1] = preds[j]
            # Each label set is scored on its own test labels (control labels for the control task).
            set_scores[j, l0:l1] = _test_scores(preds[j], fs.labels[n_train:], kind)
        if config.mdl:
            if config.mdl_C is not None:
                layer_c = np.full(l1 - l0, config.mdl_C)
            elif config.probe == "linear":
                layer_c = chosen[0, l0:l1]  # task, seed 0
            else:
                layer_c = np.ones(l1 - l0)
            mdl_bits[l0:l1] = _mdl_codelength(xs_train, enc, true_idx, mdl_order, ends, layer_c, config)
        del xs, xs_train

    return _assemble(
        kind, config, layers, sets, set_scores, task_pred, y, is_train, groups, chosen, converged, mdl_bits,
        enc, notes,
    )  # fmt: skip


def _refit(
    xs: torch.Tensor,
    sets: list[_FitSet],
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
    for batch in _problem_batches(len(sets), nl, n_train, enc.targets.shape[1], config.batch_mb):
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
            preds[j] = _predict(z[:, :, p], enc)
            converged[j] = model.converged[:, p]
    return preds, converged


def _assemble(
    kind: TargetKind,
    config: ProtocolConfig,
    layers: tuple[int, ...],
    sets: list[_FitSet],
    set_scores: np.ndarray,
    task_pred: np.ndarray,
    y: np.ndarray,
    is_train: np.ndarray,
    groups: np.ndarray | None,
    chosen: np.ndarray,
    converged: np.ndarray,
    mdl_bits: np.ndarray,
    enc: EncodedTargets,
    notes: list[str],
) -> ProtocolResult:
    """Turn per-set, per-layer arrays into the per-layer result."""
    n_layers = len(layers)
    test_idx = np.flatnonzero(~is_train)
    y_test = y[test_idx]

    def mean_of(name: str) -> np.ndarray:
        rows = [j for j, fs in enumerate(sets) if fs.name == name]
        return set_scores[rows].mean(0) if rows else np.full(n_layers, np.nan)

    task_rows = [j for j, fs in enumerate(sets) if fs.name == "task"]
    task = set_scores[task_rows]  # [S, L]
    score = task.mean(0)
    std = task.std(0, ddof=1) if len(task_rows) > 1 else np.full(n_layers, np.nan)
    control, shuffled = mean_of("control"), mean_of("shuffled")
    if kind == "multiclass":
        f1 = np.array(
            [[macro_f1(y_test, task_pred[s, layer]) for layer in range(n_layers)] for s in range(len(task_rows))]
        )
        macro = f1.mean(0)
    else:
        macro = np.full(n_layers, np.nan)
    if config.n_bootstrap:
        unit_groups = groups[test_idx] if (config.bootstrap_unit == "group" and groups is not None) else None
        if config.bootstrap_unit == "group" and groups is None:
            notes.append("bootstrap_unit='group' without groups: resampled docs")
        boot = bootstrap_layer_scores(
            task_pred,
            y_test,
            kind=kind,
            n_bootstrap=config.n_bootstrap,
            seed=(config.seed, 0, _BOOT),
            groups=unit_groups,
        )
        alpha = (1 - config.ci_level) / 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN layer keeps a NaN interval
            low, high = np.nanquantile(boot, [alpha, 1 - alpha], axis=0)
        best = best_layer_distribution(boot)
    else:
        low = high = best = np.full(n_layers, np.nan)
    n_train = int(is_train.sum())
    uniform = float(n_train * (math.log2(enc.n_classes) if kind == "multiclass" else enc.targets.shape[1]))
    if not config.mdl:
        uniform = math.nan
    task_c = chosen[task_rows]  # [S, L]

    def per_layer(values: np.ndarray) -> dict[int, float]:
        return {layer: float(v) for layer, v in zip(layers, values, strict=True)}

    return ProtocolResult(
        kind=kind,
        probe=config.probe,
        metric="accuracy" if kind == "multiclass" else "mAP",
        layers=layers,
        score=per_layer(score),
        score_std=per_layer(std),
        ci_low=per_layer(low),
        ci_high=per_layer(high),
        macro_f1=per_layer(macro),
        control_score=per_layer(control),
        selectivity=per_layer(score - control),
        shuffled_score=per_layer(shuffled),
        mdl_codelength_bits=per_layer(mdl_bits),
        mdl_compression=per_layer(uniform / mdl_bits),
        chosen_C=per_layer(np.median(task_c, axis=0)),
        chosen_C_per_seed={layer: tuple(float(c) for c in task_c[:, i]) for i, layer in enumerate(layers)},
        converged={layer: bool(converged[task_rows, i].all()) for i, layer in enumerate(layers)},
        best_layer_prob=per_layer(best),
        majority_baseline=majority_baseline(y, is_train, kind),
        mdl_uniform_codelength_bits=uniform,
        n_train=n_train,
        n_dev=int(sets[0].dev.sum()),
        n_test=int(test_idx.size),
        config=config,
        notes=tuple(notes),
    )


__all__ = [
    "PAPER_C_GRID",
    "FAST_C_GRID",
    "MDL_FRACTIONS",
    "PRESETS",
    "ProtocolConfig",
    "ProtocolResult",
    "average_precision",
    "best_layer_distribution",
    "bootstrap_layer_scores",
    "control_task_labels",
    "group_dev_split",
    "macro_f1",
    "majority_baseline",
    "mdl_block_ends",
    "mean_average_precision",
    "run_protocol",
    "shuffled_labels",
]
