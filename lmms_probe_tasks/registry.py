"""Entry point for lmms-eval: registers the ``hidden_states`` model and makes our tasks visible.

lmms-eval 0.7.3 has a plug-in hook for models (the ``lmms_eval.models`` entry-point
group) but none for tasks. The model entry point runs while ``lmms_eval.models`` is
imported, which happens before the CLI builds its ``TaskManager``; so, besides
returning the model manifest, it wraps ``TaskManager.initialize_tasks`` once to
append our task folder to whatever ``--include_path`` the user gave. This module
stays import-light (no torch) because it runs on every lmms-eval start.
"""

from __future__ import annotations

import functools
from typing import Any

MODEL_ID = "hidden_states"
MODEL_CLASS_PATH = "lmms_probe_tasks.models.hidden_states.HiddenStates"
_PATCH_MARKER = "_lmms_probe_tasks_patched"


def model_manifests() -> list[Any]:
    """Return the model manifest lmms-eval registers, and expose our task folder.

    Returns:
        A one-element list with the ``ModelManifest`` of the ``hidden_states`` model.
    """
    from lmms_eval.models.registry_v2 import ModelManifest

    install_task_path()
    # Simple class path only: a chat path would become the default and chat-layout
    # tasks allow generation only.
    return [ModelManifest(model_id=MODEL_ID, simple_class_path=MODEL_CLASS_PATH)]


def _with_our_tasks(include_path: Any) -> Any:
    """Return ``include_path`` with our task folder appended (once, order kept)."""
    from lmms_probe_tasks import TASK_DIR

    ours = str(TASK_DIR)
    if include_path is None:
        return ours
    paths = [include_path] if isinstance(include_path, str) else list(include_path)
    if ours not in [str(p) for p in paths]:
        paths.append(ours)
    return paths


def install_task_path() -> bool:
    """Make every ``TaskManager`` index our task folder beside the user's ``--include_path``.

    Idempotent: a second call changes nothing.

    Returns:
        True if the wrapper was installed by this call, False if it already was.
    """
    from lmms_eval.tasks import TaskManager

    original = TaskManager.initialize_tasks
    if getattr(original, _PATCH_MARKER, False):
        return False

    @functools.wraps(original)
    def initialize_tasks(self: Any, include_path: Any = None, include_defaults: bool = True) -> Any:
        return original(self, include_path=_with_our_tasks(include_path), include_defaults=include_defaults)

    setattr(initialize_tasks, _PATCH_MARKER, True)
    TaskManager.initialize_tasks = initialize_tasks  # type: ignore[method-assign]
    return True
