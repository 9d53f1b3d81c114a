"""Massive activations: features stay finite and precise through the cache; an overflowing layer loses only itself."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from lmms_eval.evaluator import simple_evaluate
from lmms_eval.tasks import TaskManager

TASK = "probe_shapes_objects"


def _scaled_copy(tiny: Path, out: Path, factor: float) -> Path:
    """A copy of a tiny checkpoint with its input embeddings multiplied by ``factor``."""
    from transformers import AutoModelForImageTextToText

    shutil.copytree(tiny, out)
    model = AutoModelForImageTextToText.from_pretrained(out)
    model.get_input_embeddings().weight.data *= factor
    model.save_pretrained(out)
    return out


def _scores(ckpt: Path, cache: str):
    from lmms_probe_tasks.models.hidden_states import HiddenStates

    model = HiddenStates(pretrained=str(ckpt), feature_cache=cache, batch_size=4)
    out = simple_evaluate(
        model=model,
        tasks=[TASK],
        task_manager=TaskManager("ERROR", include_defaults=False),
        limit=60,
        log_samples=False,
    )
    rows = {k: v for k, v in out["results"][TASK].items() if "stderr" not in k and k != "alias"}
    return rows, model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from lmms_probe_tasks.tiny import build_tiny

    return build_tiny("llava", tmp_path_factory.mktemp("massive") / "llava")


def test_activations_beyond_1e6_give_the_float32_scores_through_the_cache(tiny, tmp_path, monkeypatch):
    from lmms_probe_tasks.extract import nonfinite

    ckpt = _scaled_copy(tiny, tmp_path / "big", 1e8)  # embeddings ~0.02 -> activations >= 1e6
    cached, model = _scores(ckpt, str(tmp_path / "cache"))
    assert model.meta["feature_cache"]["stats"]["writes"] == 60
    files = sorted((tmp_path / "cache").rglob("*.npy"))
    from lmms_probe_tasks.transport import read_verified

    x = read_verified(files[0])
    assert np.isfinite(x).all() and np.abs(x).max() >= 1e6  # beyond float16: kept, not inf
    again, model = _scores(ckpt, str(tmp_path / "cache"))
    assert again == cached and model.meta["feature_cache"]["stats"]["hits"] == 60
    # The reference: plain float32 features, no cache, no float16 anywhere.
    monkeypatch.setattr(nonfinite, "compact", lambda f: np.asarray(f, np.float32))
    reference, _ = _scores(ckpt, "none")
    layer_rows = [k for k in reference if "layer" in k]
    assert layer_rows
    for key in layer_rows:
        assert abs(cached[key] - reference[key]) <= 1 / 12 + 1e-9, (key, cached[key], reference[key])  # +-1 doc


def _overflowing_copy(tiny: Path, out: Path, layer: int) -> Path:
    """A copy whose decoder layer ``layer`` (0-based module) outputs inf/NaN, and so does every layer after it."""
    from transformers import AutoModelForImageTextToText

    shutil.copytree(tiny, out)
    model = AutoModelForImageTextToText.from_pretrained(out)
    model.get_decoder().layers[layer].mlp.down_proj.weight.data *= float("inf")
    model.save_pretrained(out)
    return out


@pytest.mark.e2e
def test_a_model_that_overflows_late_loses_only_those_layers_through_the_cli(tiny, tmp_path):
    from tests.test_cli_e2e import _layer_rows, _lmms_eval, _results

    # Module 2's output is row 3: rows 0-2 stay finite, rows 3 (inf) and 4 (after the norm: NaN) do not.
    ckpt = _overflowing_copy(tiny, tmp_path / "overflow", 2)
    cache = tmp_path / "cache"
    args = ["--model", "hidden_states", "--model_args", f"pretrained={ckpt.name},feature_cache={cache}"]
    log = _lmms_eval(
        args + ["--batch_size", "4", "--tasks", TASK, "--limit", "60", "--output_path", "out"], cwd=tmp_path
    )
    # Reported at the first batch, docs and layers named; the run goes on.
    assert re.search(r"NaN or inf hidden states for docs \[.+\] at layers \[3, 4\]", log), log[-3000:]
    rows = _layer_rows(_results(tmp_path / "out", log)[TASK], "map")
    assert sorted(rows) == ["map_l00", "map_l01", "map_l02", "map_l03", "map_l04"]
    assert all(math.isfinite(rows[f"map_l0{i}"]) for i in range(3)), rows
    assert all(not math.isfinite(float(rows[f"map_l0{i}"])) for i in (3, 4)), rows
    report = json.loads((tmp_path / "out" / "probes" / "overflow" / f"{TASK}.json").read_text())
    by_layer = {row["layer"]: row for row in report["layers"]}
    assert all("NaN or inf" in by_layer[i]["reason"] for i in (3, 4)), by_layer[3]
    assert all(not by_layer[i].get("reason") for i in range(3))
    assert (tmp_path / "out" / "probes" / "overflow" / f"{TASK}.csv").is_file()
    assert (tmp_path / "out" / "probes" / "overflow" / f"{TASK}.png").is_file()
    assert not list(cache.rglob("*.npy"))  # nothing non-finite is ever cached
    assert report["config"]["extraction"]["nonfinite"] == {"language": {"docs": 60, "layers": [3, 4]}}
