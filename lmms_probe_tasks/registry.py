"""Entry point for lmms-eval: registers the ``hidden_states`` model, makes our tasks visible, checks their data first.

lmms-eval 0.7.3 has a plug-in hook for models (the ``lmms_eval.models`` entry-point
group) but none for tasks. The model entry point runs while ``lmms_eval.models`` is
imported, which happens before the CLI builds its ``TaskManager``; so, besides
returning the model manifest, it wraps two ``TaskManager`` methods once:

* ``initialize_tasks``, to append our task folder to whatever ``--include_path`` the
  user gave;
* ``load_task_or_group`` (every task load by name: the CLI, ``simple_evaluate``,
  ``get_task_dict``), to check the data sources of **all** selected probe tasks before
  the first task is built, and fail with one message naming every unavailable task
  and its fix (:func:`check_probe_data`). Under data parallel (``torchrun``) lmms-eval
  builds tasks on rank 0 while the other ranks wait in a barrier, so a failure there
  would leave them waiting; there the check also runs in ``match_tasks``, which the
  CLI calls on every rank before the model is built.

This module stays import-light (no torch) because it runs on every lmms-eval start.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable
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
    install_data_check()
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


# ------------------------------------------------------------- data check
_CHECKED = "_lmms_probe_tasks_data_checked"


def _config(manager: Any, name: str) -> dict:
    """The task's YAML config, ``!function`` tags left unresolved (nothing is imported)."""
    from lmms_eval import utils

    path = manager.task_index[name]["yaml_path"]
    return utils.load_yaml_config(path, mode="simple") if path != -1 else {}


def _builder_kwargs(config: dict) -> dict | None:
    """A probe task's ``dataset_kwargs`` (a ``class:`` task naming a ``builder``), else None."""
    kwargs = config.get("dataset_kwargs")
    if "class" in config and isinstance(kwargs, dict) and isinstance(kwargs.get("builder"), str):
        return dict(kwargs)
    return None


def selected_probe_tasks(manager: Any, task_list: Iterable[Any]) -> dict[str, dict]:
    """Resolve task, tag and group names as lmms-eval would, keeping the probe tasks.

    Args:
        manager: The ``TaskManager``.
        task_list: Names (and task config dicts) given to ``load_task_or_group``.

    Returns:
        Task name -> its ``dataset_kwargs``, for every probe task among them. A name that
        does not resolve is skipped: lmms-eval reports it when it loads it.
    """
    found: dict[str, dict] = {}
    seen: set[str] = set()

    def visit(entry: Any) -> None:
        if isinstance(entry, dict):
            name = entry.get("task")
            if isinstance(name, str):
                info = manager.task_index.get(name)
                base = _config(manager, name) if info and info["type"] != "group" else {}
                kwargs = _builder_kwargs({**base, **entry})
                if kwargs is not None:
                    found[name] = kwargs
            return
        if not isinstance(entry, str) or entry in seen or entry not in manager.task_index:
            return
        seen.add(entry)
        kind = manager.task_index[entry]["type"]
        if kind in ("task", "python_task"):
            kwargs = _builder_kwargs(_config(manager, entry))
            if kwargs is not None:
                found[entry] = kwargs
        elif kind == "tag":
            for member in manager.task_index[entry]["task"]:
                visit(member)
        elif kind == "group":
            members = _config(manager, entry).get("task", [])
            for member in members if isinstance(members, list) else [members]:
                visit(member)

    for entry in task_list:
        try:
            visit(entry)
        except Exception:  # noqa: BLE001 -- lmms-eval reports a broken config when it loads it
            continue
    return found


def check_probe_data(manager: Any, task_list: Any) -> None:
    """Check the data source of every selected probe task; raise once, naming all that are unavailable.

    Cheap: file checks, and at most one short hub request per dataset id (none in offline
    mode). A manager remembers the lists it has checked.

    Args:
        manager: The ``TaskManager``.
        task_list: A name or list of names (globs already expanded), as ``load_task_or_group`` gets.

    Raises:
        DataUnavailableError: One or more probe tasks cannot read their data; the message
            names each task, what is missing and how to provide it.
    """
    names = [task_list] if isinstance(task_list, (str, dict)) else list(task_list or [])
    key = repr(names)
    done = getattr(manager, _CHECKED, set())
    if key in done:
        return
    selected = selected_probe_tasks(manager, names)
    if selected:
        from lmms_probe_tasks.data.sources import DataUnavailableError, format_unavailable
        from lmms_probe_tasks.harness.task import ProbeTask

        problems = {task: p for task, kwargs in selected.items() if (p := ProbeTask.data_problem(kwargs))}
        if problems:
            available = [task for task in selected if task not in problems]
            raise DataUnavailableError(format_unavailable(problems, available))
    setattr(manager, _CHECKED, done | {key})


def _distributed() -> bool:
    """Whether this process is one rank of several (torch already imported by lmms-eval, never here)."""
    torch = sys.modules.get("torch")
    dist = getattr(torch, "distributed", None)
    return bool(dist and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


def install_data_check() -> bool:
    """Make every ``TaskManager`` check the data of all selected probe tasks before building any task.

    Wraps ``load_task_or_group`` (and, under data parallel only, ``match_tasks``: see the
    module docstring). Idempotent: a second call changes nothing.

    Returns:
        True if the wrappers were installed by this call, False if they already were.
    """
    from lmms_eval.tasks import TaskManager

    load, match = TaskManager.load_task_or_group, TaskManager.match_tasks
    if getattr(load, _PATCH_MARKER, False):
        return False

    @functools.wraps(load)
    def load_task_or_group(self: Any, task_list: Any = None, *args: Any, **kwargs: Any) -> Any:
        check_probe_data(self, task_list)
        return load(self, task_list, *args, **kwargs)

    @functools.wraps(match)
    def match_tasks(self: Any, task_list: Any) -> Any:
        names = match(self, task_list)
        if _distributed():
            check_probe_data(self, names)
        return names

    for wrapper in (load_task_or_group, match_tasks):
        setattr(wrapper, _PATCH_MARKER, True)
    TaskManager.load_task_or_group = load_task_or_group  # type: ignore[method-assign]
    TaskManager.match_tasks = match_tasks  # type: ignore[method-assign]
    return True
