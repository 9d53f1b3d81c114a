"""Massive activations: features stay finite and precise through the cache; a NaN model stops at once."""

from __future__ import annotations

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
    from lmms_probe_tasks.models import hidden_states

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
    monkeypatch.setattr(hidden_states, "compact", lambda f: np.asarray(f, np.float32))
    reference, _ = _scores(ckpt, "none")
    layer_rows = [k for k in reference if "layer" in k]
    assert layer_rows
    for key in layer_rows:
        assert abs(cached[key] - reference[key]) <= 1 / 12 + 1e-9, (key, cached[key], reference[key])  # +-1 doc


def test_a_model_that_makes_nan_stops_at_the_first_batch(tiny, tmp_path):
    ckpt = _scaled_copy(tiny, tmp_path / "nan", float("nan"))
    with pytest.raises(ValueError, match=r"NaN or inf hidden states for docs \[.*\] at layers \[0, 1"):
        _scores(ckpt, str(tmp_path / "cache"))
    assert not list((tmp_path / "cache").rglob("*.npy"))
