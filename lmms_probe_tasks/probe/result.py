"""Holds what a protocol run returns: :class:`ProtocolResult`, one row per layer, and the one place it is built."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmms_probe_tasks.probe.config import ProtocolConfig


@dataclass(frozen=True)
class ProtocolResult:
    """Per-layer results of a protocol run; every per-layer field maps layer id -> value.

    Attributes:
        kind: ``multiclass`` or ``multilabel``.
        probe: ``linear`` or ``mlp``.
        metric: ``accuracy`` or ``mAP``.
        layers: Layer ids, in ``x`` order.
        score: Probe-test metric, mean over seeds.
        score_std: Standard deviation over seeds (NaN with one seed).
        ci_low: Lower end of the interval of ``score`` (see ``interval``).
        ci_high: Upper end of the interval of ``score``.
        macro_f1: Macro-F1 (multiclass; NaN for multilabel), mean over seeds.
        control_score: Control-task score (NaN where the control is not applicable: ``control_reason``).
        selectivity: ``score - control_score`` (NaN likewise).
        shuffled_score: Score of the probe trained on permuted probe-train labels.
        mdl_codelength_bits: Online codelength of the probe-train labels, bits.
        mdl_compression: Uniform codelength / online codelength.
        mdl_C: C of the MDL block models (chosen by the code itself unless ``mdl_C`` was fixed).
        chosen_C: Median over seeds of the C chosen on dev (NaN for the MLP probe).
        C_at_grid_edge: The chosen C sits at an end of ``c_grid``.
        chosen_C_per_seed: The chosen C of every seed.
        converged: Every refit of the layer met the solver tolerance (MLP: True).
        best_layer_prob: Probability that the layer is the best one, from test resamples and
            half-sample refits, shrunk by empirical Bayes (:mod:`lmms_probe_tasks.probe.best_layer`).
        majority_baseline: Score of the majority-class (constant) predictor.
        mdl_uniform_codelength_bits: Codelength of the labels under the uniform code.
        n_train: Probe-train docs (train + dev).
        n_dev: Dev docs of seed 0.
        n_test: Probe-test docs.
        config: The settings used.
        reason: Why every score is NaN, else None.
        notes: Things a reader should know (fallbacks, overlaps, C at the grid's edge).
        control_reason: Why the control task is not applicable (or not run), else None.
        control_shared: Share of probe-test docs whose type occurs in probe-train (NaN: no types).
        interval: What ``ci_low``/``ci_high`` are an interval of, and how they are computed.
        layer_reason: Why a layer could not be probed (NaN or inf features, a failed fit);
            "" for the layers that were.
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
    mdl_C: dict[int, float]
    chosen_C: dict[int, float]
    C_at_grid_edge: dict[int, bool]
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
    control_reason: str | None = None
    control_shared: float = math.nan
    interval: str = ""
    layer_reason: dict[int, str] = field(default_factory=dict)

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
            "shuffled_score", "mdl_codelength_bits", "mdl_compression", "mdl_C", "chosen_C", "best_layer_prob",
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
                    "C_at_grid_edge": bool(self.C_at_grid_edge[layer]),
                    "majority_baseline": float(self.majority_baseline),
                    "mdl_uniform_codelength_bits": float(self.mdl_uniform_codelength_bits),
                    "n_train": self.n_train,
                    "n_dev": self.n_dev,
                    "n_test": self.n_test,
                    "n_seeds": self.config.n_seeds,
                    "probe": self.probe,
                    "kind": self.kind,
                    "preset": self.config.preset,
                    "reason": self.reason or self.layer_reason.get(layer, ""),
                    "control_reason": self.control_reason or "",
                }
            )
            rows.append(row)
        return rows


@dataclass(frozen=True)
class LayerArrays:
    """The per-layer numbers of a run as arrays in ``x``'s layer order (``L`` layers).

    Attributes:
        score: ``[L]`` probe-test metric, mean over seeds.
        score_std: ``[L]`` its standard deviation over seeds.
        ci_low: ``[L]`` lower end of the bootstrap interval.
        ci_high: ``[L]`` upper end of the bootstrap interval.
        macro_f1: ``[L]`` macro-F1, mean over seeds.
        control_score: ``[L]`` control-task score.
        shuffled_score: ``[L]`` shuffled-label score.
        mdl_codelength_bits: ``[L]`` online codelength.
        chosen_C: ``[S, L]`` C chosen on each seed's dev split (``S = 0``: none).
        converged: ``[L]`` bool, every refit met the solver tolerance.
        best_layer_prob: ``[L]`` probability that the layer is best.
        mdl_C: ``[L]`` C of the MDL block models.
        C_at_grid_edge: ``[L]`` bool, the chosen C sits at an end of the grid.
    """

    score: np.ndarray
    score_std: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    macro_f1: np.ndarray
    control_score: np.ndarray
    shuffled_score: np.ndarray
    mdl_codelength_bits: np.ndarray
    chosen_C: np.ndarray
    converged: np.ndarray
    best_layer_prob: np.ndarray
    mdl_C: np.ndarray
    C_at_grid_edge: np.ndarray

    @classmethod
    def unscored(cls, n_layers: int) -> LayerArrays:
        """All NaN, no chosen C, nothing converged: the arrays of a run that fitted nothing."""
        nan = np.full(n_layers, np.nan)
        none = np.zeros(n_layers, bool)
        return cls(nan, nan, nan, nan, nan, nan, nan, nan, np.empty((0, n_layers)), none, nan, nan, none)


def build_result(
    kind: str,
    config: ProtocolConfig,
    layers: tuple[int, ...],
    arrays: LayerArrays,
    *,
    majority_baseline: float,
    uniform_bits: float,
    n_train: int,
    n_dev: int,
    n_test: int,
    reason: str | None = None,
    notes: tuple[str, ...] = (),
    control_reason: str | None = None,
    control_shared: float = math.nan,
    interval: str = "",
    layer_reason: tuple[str, ...] = (),
) -> ProtocolResult:
    """Turn per-layer arrays into the result; derives selectivity, compression and the median C.

    Args:
        kind: ``multiclass`` or ``multilabel``.
        config: The settings used.
        layers: ``L`` layer ids.
        arrays: The per-layer numbers.
        majority_baseline: Score of the constant predictor.
        uniform_bits: Uniform codelength of the probe-train labels (NaN without MDL).
        n_train: Probe-train docs.
        n_dev: Dev docs of seed 0.
        n_test: Probe-test docs.
        reason: Why every score is NaN, else None.
        notes: Things a reader should know.
        control_reason: Why the control task is not applicable, else None.
        control_shared: Share of probe-test docs with a type seen in probe-train.
        interval: What the interval is.
        layer_reason: ``[L]`` why each layer could not be probed ("" if it could).

    Returns:
        The result.
    """

    def per_layer(values: np.ndarray) -> dict[int, float]:
        return {layer: float(v) for layer, v in zip(layers, values, strict=True)}

    chosen = arrays.chosen_C
    median_c = np.median(chosen, axis=0) if chosen.shape[0] else np.full(len(layers), np.nan)
    return ProtocolResult(
        kind=kind,
        probe=config.probe,
        metric="accuracy" if kind == "multiclass" else "mAP",
        layers=layers,
        score=per_layer(arrays.score),
        score_std=per_layer(arrays.score_std),
        ci_low=per_layer(arrays.ci_low),
        ci_high=per_layer(arrays.ci_high),
        macro_f1=per_layer(arrays.macro_f1),
        control_score=per_layer(arrays.control_score),
        selectivity=per_layer(arrays.score - arrays.control_score),  # NaN where the control is N/A
        shuffled_score=per_layer(arrays.shuffled_score),
        mdl_codelength_bits=per_layer(arrays.mdl_codelength_bits),
        mdl_compression=per_layer(uniform_bits / arrays.mdl_codelength_bits),
        mdl_C=per_layer(arrays.mdl_C),
        chosen_C=per_layer(median_c),
        C_at_grid_edge={layer: bool(arrays.C_at_grid_edge[i]) for i, layer in enumerate(layers)},
        chosen_C_per_seed={layer: tuple(float(c) for c in chosen[:, i]) for i, layer in enumerate(layers)},
        converged={layer: bool(arrays.converged[i]) for i, layer in enumerate(layers)},
        best_layer_prob=per_layer(arrays.best_layer_prob),
        majority_baseline=majority_baseline,
        mdl_uniform_codelength_bits=uniform_bits,
        n_train=n_train,
        n_dev=n_dev,
        n_test=n_test,
        config=config,
        reason=reason,
        notes=notes,
        control_reason=control_reason,
        control_shared=control_shared,
        interval=interval,
        layer_reason={layer: why for layer, why in zip(layers, layer_reason, strict=False) if why},
    )


def unscored_result(
    kind: str, config: ProtocolConfig, layers: tuple[int, ...], n_train: int, n_test: int, reason: str
) -> ProtocolResult:
    """The result of data that cannot support a probe: every score NaN, ``reason`` says why."""
    return build_result(
        kind, config, layers, LayerArrays.unscored(len(layers)), majority_baseline=math.nan, uniform_bits=math.nan,
        n_train=n_train, n_dev=0, n_test=n_test, reason=reason,
    )  # fmt: skip


__all__ = ["LayerArrays", "ProtocolResult", "build_result", "unscored_result"]
