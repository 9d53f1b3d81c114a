"""Reports: JSON/CSV/PNG per task, merged control runs, the comparison figure (content: test_report_figures.py)."""

from __future__ import annotations

import csv
import json

import numpy as np

from lmms_probe_tasks.harness import ProbeSpec
from lmms_probe_tasks.probe import text_only_score
from lmms_probe_tasks.report import ProbeReport, versions, write_report


def _report(task: str, semantics: str, scores: list[float], **extraction) -> ProbeReport:
    rows = [
        {
            "layer": i,
            "relative_depth": i / (len(scores) - 1),
            "acc": s,
            "ci_low": s - 0.05,
            "ci_high": s + 0.05,
            "control_score": 0.3,
        }
        for i, s in enumerate(scores)
    ]
    summary = {
        "best_layer": float(np.argmax(scores)),
        "best": max(scores),
        "last": scores[-1],
        "majority_baseline": 0.33,
    }
    config = {
        "semantics": semantics,
        "extraction": {"model": "org/model", "init": "pretrained", "blind": "none", **extraction},
    }
    return ProbeReport(task, "acc", rows, summary, config)


def test_files_merge_and_comparison_figure(tmp_path):
    root = tmp_path / "probes"
    paths = write_report(_report("probe_x_entailment", "global", [0.4, 0.8, 0.6]), root)
    assert set(paths) == {"json", "csv", "png", "comparison"}
    assert paths["comparison"] == root / "comparison.png"
    assert json.loads(paths["json"].read_text())["summary"]["best_layer"] == 1.0
    write_report(_report("probe_x_entailment", "global", [0.4, 0.45, 0.5], init="random (seed 1)"), root)
    write_report(_report("probe_x_entailment", "global", [0.35, 0.5, 0.45], blind="blank"), root)
    paths = write_report(_report("probe_x_objects", "local", [0.5, 0.9, 0.9]), root)
    assert paths["comparison"].read_bytes()[:4] == b"\x89PNG"
    assert not list(root.rglob("paper_figure.png"))  # the comparison figure replaces it
    folder = root / "org__model"
    rows = list(csv.DictReader((folder / "probe_x_entailment.csv").open()))
    assert [float(r["random_init_score"]) for r in rows] == [0.4, 0.45, 0.5]
    assert [round(float(r["image_gain_vs_blind_blank"]), 6) for r in rows] == [0.05, 0.3, 0.15]
    # The control runs' own CSVs point back at the pretrained-model folders' siblings.
    assert (root / "org__model__init-random" / "probe_x_entailment.csv").exists()
    assert (root / "org__model__blind-blank" / "probe_x_entailment.png").exists()


def test_text_only_baseline_sees_text_leaks_only():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    is_train = np.arange(200) < 150
    leaky = [f"word{label} filler" for label in y]
    assert text_only_score(leaky, y, is_train, "multiclass") == 1.0
    assert np.isnan(text_only_score([""] * 200, y, is_train, "multiclass"))
    noise = [f"token{rng.integers(0, 1000)}" for _ in y]
    assert text_only_score(noise, y, is_train, "multiclass") < 0.7


def test_cli_gen_kwargs_override_the_yaml_protocol():
    spec = ProbeSpec.from_metadata(
        "t", {"probe": {"metric": "acc", "preset": "paper", "protocol": {"n_bootstrap": 50}}}
    )
    assert spec.protocol_config().n_seeds == 3 and spec.protocol_config().n_bootstrap == 50
    cli = spec.protocol_config({"probe_preset": "fast", "probe_seeds": 2, "probe_model": "mlp", "until": []})
    assert (cli.preset, cli.n_seeds, cli.probe) == ("fast", 2, "mlp")


def test_versions_name_every_library_that_shapes_the_numbers():
    found = versions()
    assert {"python", "lmms-probe-tasks", "lmms-eval", "transformers", "torch", "scikit-learn"} <= set(found)
    assert all(isinstance(v, str) and v for v in found.values())


def test_folder_names_are_visible_and_flat():
    from lmms_probe_tasks.report import sanitize

    assert sanitize("./tiny") == "tiny"
    assert sanitize("../ckpt/llava/") == "ckpt__llava"
    assert sanitize("/tmp/tinyllava") == "tmp__tinyllava"
    assert sanitize("llava-hf/llava-1.5-7b-hf") == "llava-hf__llava-1.5-7b-hf"
