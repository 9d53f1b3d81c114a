"""The one contract of every document builder: arguments checked alike, ``BuiltDocs`` returned, docs checked alike."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import numpy as np

#: Default probe-train and probe-test documents of the real-data tasks (the README's sizes).
N_TRAIN = 10_000
N_TEST = 2_000
#: Columns every builder's docs carry besides the target (``label`` or ``labels``).
REQUIRED_COLUMNS: tuple[str, ...] = ("uid", "probe_split", "image")


@dataclass(frozen=True)
class BuiltDocs:
    """What every ``dataset_kwargs.builder`` returns.

    Attributes:
        docs: A ``datasets.Dataset``, the shuffled union of probe-train and probe-test
            documents, with columns ``uid``, ``probe_split`` (``train``/``test``), ``image``,
            ``text`` and the target (``label`` int or ``labels`` list of ints).
        report: JSON-ready counts of what the builder used and skipped, and why; recorded
            in every result artifact (``config.data.report``). Empty for generated data.
    """

    docs: Any
    report: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ arguments
def is_int(value: object) -> TypeGuard[int | np.integer]:
    """Return whether ``value`` is a whole number: a Python or NumPy int, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_int(name: str, value: object, minimum: int, example: int, hint: str = "") -> int:
    """Return ``value`` as an int, or raise naming the argument, the range and a fix.

    Args:
        name: Argument name, for the message.
        value: The value passed.
        minimum: Smallest allowed value.
        example: A valid value to suggest.
        hint: Words put before the example, e.g. ``"a non-negative whole number, "``.

    Returns:
        ``value`` as a Python int.

    Raises:
        ValueError: ``value`` is not a whole number >= ``minimum``.
    """
    if not is_int(value) or int(value) < minimum:
        raise ValueError(f"{name} must be an int >= {minimum} (got {value!r}); pass {hint}e.g. {name}={example}")
    return int(value)


def check_choice(name: str, value: object, allowed: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise naming the allowed set.

    Raises:
        ValueError: ``value`` is not allowed.
    """
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))} (got {value!r})")
    return str(value)


def check_sizes(
    n_train: object,
    n_test: object,
    seed: object,
    examples: tuple[int, int] = (N_TRAIN, N_TEST),
    *,
    spell_out: bool = False,
) -> tuple[int, int, int]:
    """Validate the three arguments every builder takes.

    Args:
        n_train: Probe-train documents (>= 1).
        n_test: Probe-test documents (>= 1).
        seed: Sampling seed (>= 0).
        examples: The builder's default sizes, suggested in messages.
        spell_out: Say in words what each argument counts (the shapes builders do).

    Returns:
        ``(n_train, n_test, seed)`` as ints.

    Raises:
        ValueError: An argument is not a whole number in range.
    """
    hints = ("", "", "")
    if spell_out:
        hints = (
            "a positive whole number of probe-train documents, ",
            "a positive whole number of probe-test documents, ",
            "a non-negative whole number, ",
        )
    return (
        check_int("n_train", n_train, 1, examples[0], hints[0]),
        check_int("n_test", n_test, 1, examples[1], hints[1]),
        check_int("seed", seed, 0, 0, hints[2]),
    )


# ---------------------------------------------------------------------- docs
def check_docs(task: str, docs: Any, label_field: str) -> None:
    """Refuse, at task load, documents the probe cannot use as given.

    Args:
        task: Task name, for messages.
        docs: The ``datasets.Dataset`` of a :class:`BuiltDocs`.
        label_field: The target column the task's YAML names.

    Raises:
        ValueError: A missing column, or duplicate ``uid`` values (naming a few) — a duplicate
            would silently weigh one document twice, or put it on both sides.
    """
    missing = [c for c in (*REQUIRED_COLUMNS, label_field) if c not in docs.column_names]
    if missing:
        raise ValueError(f"task {task}: its builder's documents lack column(s) {missing}; see README 'Adding a task'")
    uids = docs["uid"]
    if len(set(uids)) != len(uids):
        dupes = sorted(uid for uid, n in Counter(uids).items() if n > 1)
        raise ValueError(
            f"task {task}: {len(uids) - len(set(uids))} duplicate doc uid(s), e.g. {dupes[:5]}; "
            "every document needs a unique uid (fix the task's builder)"
        )
    splits = set(docs["probe_split"])
    if not splits <= {"train", "test"}:
        raise ValueError(f"task {task}: probe_split values {sorted(splits - {'train', 'test'})}; valid: train, test")
