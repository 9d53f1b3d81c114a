"""Synthetic probe reports in the schema a real run writes (``probes/<run folder>/<task>.json``)."""

from __future__ import annotations

import json
from pathlib import Path

from lmms_probe_tasks.report import run_folder_name

CONTROL_REASON = "not applicable: the task declares no type that recurs across the split (metadata.probe.type_field)"


def report_json(
    task: str,
    semantics: str | None,
    scores: list[float | None],
    *,
    metric: str = "acc",
    control: list[float] | None = None,
    ci: bool = True,
    majority: float | None = 0.33,
    model: str = "org/model",
    init: str = "pretrained",
    blind: str = "none",
) -> dict:
    """A report as :meth:`ProbeReport.to_dict` writes it (the fields the figures read, and some more).

    ``control=None`` is a task whose control does not apply: every ``control_score`` is null.
    """
    n_layers = len(scores) - 1
    rows = [
        {
            "layer": i,
            "relative_depth": i / n_layers,
            metric: s,
            "score_std": None,
            "ci_low": s - 0.05 if ci and s is not None else None,
            "ci_high": s + 0.05 if ci and s is not None else None,
            "control_score": control[i] if control else None,
            "selectivity": s - control[i] if control and s is not None else None,
            "shuffled_score": 0.33,
            "majority_baseline": majority,
            "probe": "linear",
            "kind": "multiclass" if metric == "acc" else "multilabel",
            "preset": "fast",
            "control_reason": None if control else CONTROL_REASON,
        }
        for i, s in enumerate(scores)
    ]
    valid = [s for s in scores if s is not None]
    summary = {
        "best_layer": float(scores.index(max(valid))) if valid else None,
        "best": max(valid) if valid else None,
        "last": scores[-1],
        "majority_baseline": majority,
        "control_reason": None if control else CONTROL_REASON,
        "interval": "95% BCa bootstrap, over probe-test images (groups)",
    }
    config = {
        "protocol": {"preset": "fast", "probe": "linear", "ci_level": 0.95, "n_bootstrap": 100},
        "semantics": semantics,
        "extraction": {
            "model": model,
            "init": init,
            "blind": blind,
            "n_layers": n_layers,
            "layers": list(range(n_layers + 1)),
            "pooling": "last",
        },
    }
    return {"task": task, "metric": metric, "summary": summary, "layers": rows, "config": config}


def write_run(probes_root: Path, data: dict) -> Path:
    """Write a report where its run would: ``probes_root/<run folder>/<task>.json``."""
    folder = probes_root / run_folder_name(data["config"]["extraction"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{data['task']}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
