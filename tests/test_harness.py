"""The probe task inside lmms-eval's evaluator, with a fake model (no checkpoint)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from lmms_eval.evaluator import simple_evaluate
from lmms_eval.tasks import TaskManager

from lmms_probe_tasks import transport
from lmms_probe_tasks.harness import ProbeSpec, load_builder
from tests.fakes import N_LAYERS, SIGNAL_LAYER, PlantedModel

FIXTURES = str(Path(__file__).parent / "task_fixtures")


def _fixture_variant(tmp_path: Path, name: str, *replacements: tuple[str, str]) -> TaskManager:
    """A task manager over a copy of fake_planted.yaml, saved as NAME.yaml with text replaced."""
    folder = tmp_path / "tasks"
    folder.mkdir(exist_ok=True)
    text = (Path(FIXTURES) / "fake_planted.yaml").read_text()
    text = text.replace("../../task_yamls/", str(Path(FIXTURES).parent.parent / "task_yamls") + "/")
    for old, new in replacements:
        text = text.replace(old, new)
    (folder / f"{name}.yaml").write_text(text)
    return TaskManager("ERROR", include_path=str(folder), include_defaults=False)


def _run(tasks, model=None, **kwargs):
    model = model or PlantedModel()
    manager = TaskManager("ERROR", include_path=FIXTURES, include_defaults=False)
    out = simple_evaluate(model=model, tasks=tasks, task_manager=manager, log_samples=False, **kwargs)
    return out["results"], model


def test_one_row_per_layer_and_planted_peak():
    results, model = _run(["fake_planted", "fake_planted_multilabel"])
    acc = results["fake_planted"]
    assert [k for k in acc if k[5:7].isdigit() and k.startswith("acc_l") and "stderr" not in k] == [
        f"acc_l{i:02d},none" for i in range(N_LAYERS + 1)
    ]
    assert acc["best_layer,none"] == SIGNAL_LAYER
    assert acc["acc_best,none"] == acc[f"acc_l{SIGNAL_LAYER:02d},none"] > 0.9
    assert acc["acc_last,none"] == acc[f"acc_l{N_LAYERS:02d},none"]
    mapr = results["fake_planted_multilabel"]
    assert mapr["best_layer,none"] == SIGNAL_LAYER and mapr["map_best,none"] > 0.9

    # One forward per doc, every feature consumed from the store.
    assert model.calls == 2 * 90 and len(transport.STORE) == 0


def test_class_names_come_from_dataset_features():
    manager = TaskManager("ERROR", include_path=FIXTURES, include_defaults=False)
    task = manager.load_task_or_group(["fake_planted_multilabel"])["fake_planted_multilabel"]
    assert task.spec.label_names == ("a", "b", "c") and task.spec.n_classes == 3


def test_prompt_template_is_applied():
    _, model = _run(["fake_planted"], limit=5)
    assert all(p.startswith("Is it true? statement ") for p in model.prompts)


def test_tiny_limit_gives_nan_rows_not_a_crash(caplog):
    results, _ = _run(["fake_planted"], limit=2)
    row = results["fake_planted"]
    layer_values = [v for k, v in row.items() if k[5:7].isdigit() and k.startswith("acc_l") and "stderr" not in k]
    assert len(layer_values) == N_LAYERS + 1 and all(math.isnan(v) for v in layer_values)
    assert math.isnan(row["best_layer,none"])


def test_use_cache_never_stores_probe_requests(tmp_path):
    from lmms_eval.caching.response_cache import is_deterministic
    from lmms_eval.utils import load_yaml_config

    from lmms_probe_tasks import TASK_DIR

    template = load_yaml_config(str(TASK_DIR / "_default_template_yaml"), mode="simple")
    assert not is_deterministic("generate_until", template["generation_kwargs"])
    first, _ = _run(["fake_planted"], use_cache=str(tmp_path / "cache"))
    second, model = _run(["fake_planted"], use_cache=str(tmp_path / "cache"))
    assert model.calls == 90 and first == second


def test_foreign_response_fails_at_once():
    class Talker(PlantedModel):
        def generate_until(self, requests):
            return ["just text"] * len(requests)

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="not a feature key"):
        _run(["fake_planted"], model=Talker(), limit=4)
    assert time.monotonic() - start < 5, "must not go through lmms-eval's 5 retries"


def test_probe_spec_errors_name_the_fix():
    with pytest.raises(ValueError, match="metadata.probe is missing"):
        ProbeSpec.from_metadata("t", {"version": 1})
    with pytest.raises(ValueError, match="unknown metadata.probe keys"):
        ProbeSpec.from_metadata("t", {"probe": {"metirc": "acc"}})
    with pytest.raises(ValueError, match="not one of acc, map"):
        ProbeSpec.from_metadata("t", {"probe": {"metric": "f1"}})
    with pytest.raises(ValueError, match="importable function"):
        load_builder("lmms_probe_tasks.nope.builder")


def test_a_builder_not_returning_built_docs_is_named_with_the_fix(tmp_path):
    manager = _fixture_variant(
        tmp_path,
        "fake_bare",
        ("task: fake_planted", "task: fake_bare"),
        ("tests.fakes.planted_docs", "tests.fakes.bare_dataset"),
    )
    with pytest.raises(TypeError, match=r"builder 'tests.fakes.bare_dataset' returned Dataset, not a BuiltDocs"):
        manager.load_task_or_group(["fake_bare"])


def test_all_layers_are_fitted_once_per_task_not_per_row(monkeypatch):
    from lmms_probe_tasks.harness import task

    calls = []
    real = task.run_protocol

    def counting(x, *args, **kwargs):
        calls.append(x.shape)
        return real(x, *args, **kwargs)

    monkeypatch.setattr(task, "run_protocol", counting)
    _run(["fake_planted", "fake_planted_multilabel"])
    assert calls == [(N_LAYERS + 1, 90, 8), (N_LAYERS + 1, 90, 8)]


def test_prompt_override_per_model_type(monkeypatch, tmp_path):
    from lmms_probe_tasks.harness import doc_to_text

    manager = _fixture_variant(
        tmp_path,
        "fake_planted",
        ('    prompt: "Is it true? {text}"', '    prompt: "Is it true? {text}"\n  llava:\n    prompt: "LLaVA: {text}"'),
    )
    monkeypatch.setattr(transport, "ACTIVE_MODEL", {"model": "org/ckpt", "model_type": "llava"})
    task = manager.load_task_or_group(["fake_planted"])["fake_planted"]
    assert doc_to_text({"text": "x"}, task.lmms_eval_specific_kwargs) == "LLaVA: x"
    monkeypatch.setattr(transport, "ACTIVE_MODEL", {"model": "org/ckpt", "model_type": "qwen2_vl"})
    task = manager.load_task_or_group(["fake_planted"])["fake_planted"]
    assert doc_to_text({"text": "x"}, task.lmms_eval_specific_kwargs) == "Is it true? x"
