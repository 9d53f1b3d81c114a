"""Where a real-data builder's items come from: the local release or a hub copy, and which images get fetched.

* **Structural problems raise** with the path and the fix: a missing data folder or
  annotation file, an unknown ``source``, hub copies that cannot be loaded.
* **Images are opened only when selected**: candidates are walked in a seeded order and
  only as many images are fetched and decoded as the requested documents need
  (:func:`select_in_order`).
* **Availability is checked cheaply, before any loading** (:func:`source_problem`): a
  builder decorated with :func:`with_source_check` says whether its data can be read now
  (local files present; hub reachable, never tried in offline mode, one short request, no
  retries) and, if not, how to provide it. The probe tasks run these checks for every
  selected task before the first one is built (:class:`DataUnavailableError`).
"""

from __future__ import annotations

import inspect
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lmms_probe_tasks.data.contract import check_choice
from lmms_probe_tasks.data.images import MISSING_IMAGE, Fetched, ImageValue
from lmms_probe_tasks.data.reports import SkipLog

SOURCES: tuple[str, ...] = ("auto", "local", "hub")


# ---------------------------------------------------------------------- source
def resolve_source(source: object, env_var: str, folder: str | os.PathLike[str] | None, kwarg: str) -> Path | None:
    """Decide where the data comes from: a local folder (returned) or the hub (None).

    Args:
        source: ``auto`` (the folder if one is given or ``env_var`` is set, else the
            hub), ``local`` or ``hub``.
        env_var: Environment variable naming the local folder.
        folder: The builder's folder argument; wins over ``env_var``.
        kwarg: Name of that builder argument, for messages.

    Returns:
        The local folder, or None for the hub.

    Raises:
        ValueError: ``source`` is unknown, or ``local`` without a folder.
        FileNotFoundError: The folder does not exist.
    """
    source = check_choice("source", source, SOURCES)
    chosen = folder if folder not in (None, "") else os.environ.get(env_var) or None
    if source == "hub" or (source == "auto" and chosen is None):
        return None
    if chosen is None:
        raise ValueError(
            f"source='local' needs the data folder: set {env_var}=/path/to/folder or pass {kwarg}=...; "
            "or use source='hub'"
        )
    path = Path(chosen).expanduser()
    if not path.is_dir():
        origin = f"{kwarg}={folder!r}" if folder not in (None, "") else f"{env_var}={chosen!r}"
        raise FileNotFoundError(
            f"{origin} names {path}, which is not a folder. Point {env_var} (or {kwarg}) at the folder of "
            f"the original release, or unset it (and leave source='auto') to load the hub copy."
        )
    return path


def require_file(path: Path, what: str, env_var: str) -> Path:
    """Return ``path`` if it is a file, else raise naming it and the expected layout.

    Raises:
        FileNotFoundError: ``path`` is missing.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} not found: {path}. The folder named by {env_var} must hold the original release's "
            f"files in their original layout (see docs/data_sources.md); download the missing file or fix {env_var}."
        )
    return path


def open_stream(source: str, split: str, columns: list[str], env_var: str, filters: list | None = None) -> Any:
    """Stream one split of a hub dataset (or a local folder in its layout), reading only ``columns``.

    Parquet column projection means the text pass never downloads image bytes; a
    ``filters`` expression (pushed down to the parquet reader) limits the image pass to the
    selected rows. An ``image`` column is returned undecoded (``{"bytes", "path"}``).

    Args:
        source: Hub id, or a local folder of parquet files in the hub layout.
        split: The copy's split name.
        columns: Columns to read.
        env_var: Environment variable of the local release, named in the offline fix.
        filters: A parquet filter, e.g. ``[("image_id", "in", ids)]``.

    Returns:
        A ``datasets.IterableDataset``.

    Raises:
        RuntimeError: The dataset cannot be opened (offline, unknown id, wrong layout).
    """
    import datasets

    if is_hub_id(source):
        problem = hub_problem(source)
        if problem is not None:  # fail now, not after the hub client's retries
            raise hub_error(source, ConnectionError(problem), env_var)
    try:
        ds = datasets.load_dataset(source, split=split, streaming=True, columns=columns, filters=filters)
    except Exception as exc:  # noqa: BLE001 -- any loading failure gets the offline fix attached
        raise hub_error(source, exc, env_var) from exc
    if "image" in columns:
        ds = ds.cast_column("image", datasets.Image(decode=False))
    return ds


def hub_error(dataset: str, exc: Exception, env_var: str) -> RuntimeError:
    """Wrap a hub loading failure with the offline alternative."""
    return RuntimeError(
        f"could not load {dataset!r} ({type(exc).__name__}: {exc}). Without network access, download the "
        f"original release and set {env_var} to its folder (see docs/data_sources.md), or pass a local folder "
        "of the hub copy's parquet files instead of the hub id."
    )


# ---------------------------------------------------------------- availability
#: Seconds one hub request may take (connect and read) before the hub counts as
#: unreachable; ``LMMS_PROBE_HUB_TIMEOUT`` overrides it.
HUB_TIMEOUT_S = 5.0
#: The variables that put the hub clients offline (datasets reads the first two,
#: huggingface_hub the first and last).
OFFLINE_VARS: tuple[str, ...] = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
#: How long an unreachable hub is remembered, so a run checks it once, not once per dataset.
_DOWN_FOR_S = 60.0
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_hub_ok: set[tuple[str, str]] = set()
_hub_down: dict[str, tuple[float, str]] = {}
_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True)
class SourceProblem:
    """Why a builder's data cannot be read now, and how to provide it.

    Attributes:
        dataset: The data, e.g. "COCO 2017".
        reason: What is missing or unreachable, e.g. "offline mode is on (HF_HUB_OFFLINE=1), ...".
        fix: How to provide it: the environment variable and the folder layout it expects,
            or network access to the hub dataset ids.
    """

    dataset: str
    reason: str
    fix: str


class DataUnavailableError(RuntimeError):
    """The data of one or more selected probe tasks cannot be read; the message names each task and its fix."""


def with_source_check(check: Callable[..., SourceProblem | None]) -> Callable[[_F], _F]:
    """Attach ``check`` to a builder as its ``check_source``, read by :func:`source_problem`.

    Args:
        check: Called with the builder's arguments (defaults filled in) as keywords; returns
            None when the data can be read, else a :class:`SourceProblem`. It must be cheap:
            file-system checks and at most one short hub request per dataset id.
    """

    def attach(builder: _F) -> _F:
        builder.check_source = check  # type: ignore[attr-defined]
        return builder

    return attach


def source_problem(builder: Callable[..., Any], kwargs: Mapping[str, Any]) -> SourceProblem | None:
    """Run the builder's source check (if it has one) on the arguments it would be called with.

    Args:
        builder: A ``dataset_kwargs.builder`` function.
        kwargs: The arguments it gets (the YAML's ``dataset_kwargs`` minus ``builder``).

    Returns:
        None when the data can be read, when the builder has no check (generated data),
        or when the arguments do not fit it (the builder itself then raises the TypeError);
        else the problem.
    """
    check = getattr(builder, "check_source", None)
    if check is None:
        return None
    try:
        bound = inspect.signature(builder).bind(**kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    return check(**bound.arguments)


def offline_variable() -> str | None:
    """Return the first of :data:`OFFLINE_VARS` that is set to a true value (1/ON/YES/TRUE), else None."""
    for name in OFFLINE_VARS:
        if os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return name
    return None


def is_hub_id(source: str) -> bool:
    """Return whether ``source`` names a hub dataset (``owner/name``), not an existing or path-like local folder."""
    return not os.path.exists(source) and bool(_HUB_ID.match(source))


def _hub_timeout() -> float:
    try:
        return float(os.environ.get("LMMS_PROBE_HUB_TIMEOUT", HUB_TIMEOUT_S))
    except ValueError:
        return HUB_TIMEOUT_S


def hub_problem(dataset: str) -> str | None:
    """Say why the hub dataset cannot be streamed now, or None if it can (as far as one request tells).

    In offline mode (:func:`offline_variable`) nothing is tried. Otherwise one metadata
    request with a short timeout (:data:`HUB_TIMEOUT_S`) and no retries; a success is
    remembered for the process, an unreachable hub for a minute (so the other ids of the
    run are not tried). HTTP errors other than "not found" (rate limits, server errors)
    count as reachable: the loader then reports them.

    Args:
        dataset: A hub dataset id.

    Returns:
        None, or the reason, e.g. "offline mode is on (HF_HUB_OFFLINE=1)".
    """
    offline = offline_variable()
    if offline:
        return f"offline mode is on ({offline}={os.environ[offline]})"
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    endpoint = constants.ENDPOINT
    if (endpoint, dataset) in _hub_ok:
        return None
    down = _hub_down.get(endpoint)
    if down is not None and time.monotonic() - down[0] < _DOWN_FOR_S:
        return down[1]
    timeout = _hub_timeout()
    try:
        HfApi(endpoint=endpoint).dataset_info(dataset, timeout=timeout)
    except RepositoryNotFoundError:
        return (
            f"the hub at {endpoint} has no dataset {dataset!r} this machine may read "
            "(a wrong id, or private/gated: set HF_TOKEN)"
        )
    except HfHubHTTPError:
        pass  # reachable; the loader reports the HTTP error if it persists
    except Exception as exc:  # noqa: BLE001 -- DNS, connect, TLS, timeout: all mean unreachable
        waited = f" after {timeout:g} s" if "timeout" in type(exc).__name__.lower() else ""
        reason = f"the hub at {endpoint} cannot be reached{waited} ({type(exc).__name__}: {exc})"
        _hub_down[endpoint] = (time.monotonic(), reason)
        return reason
    _hub_ok.add((endpoint, dataset))
    return None


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def release_or_hub_problem(
    dataset: str,
    env_var: str,
    kwarg: str,
    layout: Sequence[str],
    source: object,
    folder: str | os.PathLike[str] | None,
    hub: Mapping[str, str],
) -> SourceProblem | None:
    """Check a builder's source as :func:`resolve_source` would pick it: the local release, else the hub copies.

    Args:
        dataset: The data's name, for the message ("COCO 2017").
        env_var: Environment variable of the local release.
        kwarg: The builder's folder argument (``coco_dir``).
        layout: Paths the release folder must hold, relative to it; folders end in ``/``.
        source: The builder's ``source``.
        folder: The builder's folder argument.
        hub: Builder argument -> hub id (or local folder in the hub layout) it would stream.

    Returns:
        None if the data can be read, else the problem and its fix.
    """
    ids = list(dict.fromkeys(hub.values()))
    network = f"allow network access to the hub dataset{'s' if len(ids) > 1 else ''} {_and(ids)}"
    offline = offline_variable()
    if offline:
        network = f"unset {offline} and {network}"
    fix = f"set {env_var} to a folder of the original release holding {', '.join(layout)}; or {network}"
    try:
        root = resolve_source(source, env_var, folder, kwarg)
    except ValueError as exc:
        return SourceProblem(dataset, str(exc), fix)
    except FileNotFoundError:
        origin = f"{kwarg}={str(folder)!r}" if folder not in (None, "") else f"{env_var}={os.environ.get(env_var)!r}"
        return SourceProblem(dataset, f"{origin} is not a folder", fix)
    if root is not None:
        missing = [p for p in layout if not ((root / p).is_dir() if p.endswith("/") else (root / p).is_file())]
        origin = f"{kwarg}={str(folder)!r}" if folder not in (None, "") else f"{env_var}={str(root)!r}"
        return SourceProblem(dataset, f"{origin} lacks {', '.join(missing)}", fix) if missing else None
    for name, value in hub.items():
        if is_hub_id(value):
            reason = hub_problem(value)
            if reason is not None:
                why = f"{env_var} is not set" if source == "auto" else f"source={source!r}"
                return SourceProblem(dataset, f"{why} and {_and(ids)} cannot be streamed: {reason}", fix)
        elif not os.path.isdir(value):
            return SourceProblem(dataset, f"{name}={value!r} is neither a folder nor a hub dataset id", fix)
    return None


def format_unavailable(problems: Mapping[str, SourceProblem], available: Sequence[str] = ()) -> str:
    """Return the one message naming every task whose data is unavailable, grouped by problem, with each fix.

    Args:
        problems: Task name -> its problem.
        available: Selected probe tasks whose data can be read (named as what would remain).
    """
    grouped: dict[SourceProblem, list[str]] = {}
    for task, problem in problems.items():
        grouped.setdefault(problem, []).append(task)
    n = len(problems)
    lines = [
        f"the data of {n} selected probe task{'s' if n > 1 else ''} cannot be read, so no task was built "
        "and no features were extracted:"
    ]
    for problem, tasks in grouped.items():
        lines.append(f"  - {', '.join(sorted(tasks))} ({problem.dataset}): {problem.reason}. Fix: {problem.fix}.")
    rest = f" (still runnable: {', '.join(sorted(available))})" if available else ""
    lines.append(f"Or leave these tasks out of --tasks{rest}. Layouts and sources: docs/data_sources.md.")
    return "\n".join(lines)


# ------------------------------------------------------------------- selection
def one_doc(key: str) -> int:
    """Documents a candidate gives when each gives one (a ``yield_of`` for :func:`select_in_order`)."""
    return 1


def batch_target(remaining: int) -> float:
    """Return the documents' worth of candidates fetched per batch: what is still needed + 5 % + 8 for bad images."""
    return remaining * 1.05 + 8


def select_in_order(
    order: Sequence[str],
    n_docs: int,
    yield_of: Callable[[str], int],
    fetch: Callable[[list[str]], Mapping[str, Fetched]],
    skips: SkipLog,
) -> tuple[list[str], dict[str, ImageValue]]:
    """Walk candidate images in order, fetching in batches, until they yield ``n_docs`` documents.

    Only a little more than what is still needed is fetched per batch (a 5 % + 8 margin
    for images that turn out bad), so a 10k-document task never opens a whole split.
    An image that fails is counted in ``skips`` once the walk reaches it.

    Args:
        order: Candidate image ids in the seeded order.
        n_docs: Documents wanted.
        yield_of: How many documents an image gives (> 0).
        fetch: Maps a batch of ids to image values or skip reasons.
        skips: Where failures are counted.

    Returns:
        The chosen ids (a prefix of the usable candidates) and their image values.
    """
    chosen: list[str] = []
    images: dict[str, ImageValue] = {}
    total, pos = 0, 0
    while total < n_docs and pos < len(order):
        batch, expected = [], 0
        target = batch_target(n_docs - total)
        while pos < len(order) and expected < target:
            batch.append(order[pos])
            expected += yield_of(order[pos])
            pos += 1
        fetched = fetch(batch)
        for key in batch:
            if total >= n_docs:
                break
            value = fetched.get(key, MISSING_IMAGE)
            if isinstance(value, str):
                skips.add(value, key)
                continue
            chosen.append(key)
            images[key] = value
            total += yield_of(key)
    return chosen, images
