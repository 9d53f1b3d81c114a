"""Registration: the model manifest and our task folder beside the user's --include_path."""

from __future__ import annotations

from pathlib import Path

from lmms_eval.tasks import TaskManager

from lmms_probe_tasks import TASK_DIR
from lmms_probe_tasks.registry import MODEL_CLASS_PATH, install_data_check, install_task_path, model_manifests

FIXTURES = str(Path(__file__).parent / "task_fixtures")


def test_manifest_is_simple_only():
    (manifest,) = model_manifests()
    assert manifest.model_id == "hidden_states"
    assert manifest.simple_class_path == MODEL_CLASS_PATH
    assert manifest.chat_class_path is None


def test_task_dir_ships_the_yamls():
    names = {p.name for p in TASK_DIR.iterdir()}
    assert "_default_template_yaml" in names
    assert {"probe_shapes_entailment.yaml", "probe_shapes_objects.yaml"} <= names


def test_tasks_visible_without_flags_and_beside_user_path():
    install_task_path()
    assert install_task_path() is False  # idempotent
    ours = TaskManager("ERROR", include_defaults=False)
    assert {"probe_shapes_entailment", "probe_shapes_objects"} <= set(ours.all_tasks)
    both = TaskManager("ERROR", include_path=FIXTURES, include_defaults=False)
    assert {"probe_shapes_entailment", "fake_planted"} <= set(both.all_tasks)
    assert {"probe_shapes_entailment", "probe_shapes_objects", "probe_coco_entailment", "probe_snli_ve"} <= set(
        both.match_tasks(["probe_*"])
    )
    assert "lmms_probe_paper" not in both.match_tasks(["probe_*"])


def test_data_check_wraps_task_loading_once():
    model_manifests()  # what lmms-eval's entry point calls
    assert install_data_check() is False  # idempotent
    assert getattr(TaskManager.load_task_or_group, "_lmms_probe_tasks_patched", False)
    assert getattr(TaskManager.match_tasks, "_lmms_probe_tasks_patched", False)
    # Single process: matching only matches, even when the matched tasks lack data (conftest: offline).
    assert "probe_snli_ve" in TaskManager("ERROR", include_defaults=False).match_tasks(["probe_*"])
