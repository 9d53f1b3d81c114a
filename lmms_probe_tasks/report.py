"""Writes a probe task's per-layer results as JSON, CSV and a PNG curve."""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from lmms_probe_tasks.probe import LayerScore


@dataclass(frozen=True)
class ProbeReport:
    """Everything one probe task produced in one run.

    Attributes:
        task: lmms-eval task name.
        metric: Primary metric name (``acc`` or ``map``).
        scores: Layer index -> score, layers 0..L (0 = embedding output).
        summary: ``best_layer``, ``best``, ``last`` (see :func:`probe.summarize`).
        config: Probe settings, extraction settings (model, pooling, prompt, ...),
            data counts and library versions: everything needed to reproduce the row.
    """

    task: str
    metric: str
    scores: dict[int, LayerScore]
    summary: dict[str, float]
    config: dict

    def rows(self) -> list[dict]:
        """One plain dict per layer: layer, relative depth, score and secondary metrics."""
        n_layers = max(self.scores) if self.scores else 0
        out = []
        for layer in sorted(self.scores):
            s = self.scores[layer]
            out.append(
                {
                    "layer": layer,
                    "relative_depth": layer / n_layers if n_layers else 0.0,
                    self.metric: s.score,
                    **s.extra,
                    "n_train": s.n_train,
                    "n_test": s.n_test,
                }
            )
        return out

    def to_dict(self) -> dict:
        """Return the report as JSON-ready data (NaN becomes null)."""
        return _json_safe(
            {
                "task": self.task,
                "metric": self.metric,
                "summary": self.summary,
                "layers": self.rows(),
                "nan_reason": next((s.reason for s in self.scores.values() if s.reason), None),
                "config": self.config,
            }
        )


def _json_safe(value: object) -> object:
    """Replace NaN/inf floats by None recursively (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def sanitize(name: str) -> str:
    """Make a model id or path usable as one folder name (as lmms-eval does: ``/`` -> ``__``)."""
    return name.strip("/").replace("/", "__").replace(os.sep, "__") or "model"


def write_report(report: ProbeReport, folder: str | os.PathLike) -> dict[str, Path]:
    """Write ``<task>.json``, ``<task>.csv`` and ``<task>.png`` into ``folder``.

    Args:
        report: The results of one task.
        folder: Destination; created if missing.

    Returns:
        Kind (``json``, ``csv``, ``png``) -> written path.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {kind: folder / f"{report.task}.{kind}" for kind in ("json", "csv", "png")}
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2, sort_keys=False) + "\n")
    rows = report.rows()
    with paths["csv"].open("w", newline="") as handle:
        fieldnames = list(dict.fromkeys(key for row in rows for key in row))
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    plot_curve(report, paths["png"])
    return paths


def plot_curve(report: ProbeReport, path: str | os.PathLike) -> None:
    """Draw the probe score against layer index, marking the best layer."""
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    layers = sorted(report.scores)
    values = [report.scores[layer].score for layer in layers]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(layers, values, marker="o", markersize=3, label=report.metric)
    best = report.summary.get("best_layer")
    if best is not None and not math.isnan(best):
        ax.axvline(best, color="grey", linestyle=":", label=f"best layer {int(best)}")
    model = report.config.get("extraction", {}).get("model", "")
    ax.set_title(f"{report.task} — {model}", fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel(report.metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
