"""Seeded randomness shared by every builder: one stream per (seed, task, split) and ``--limit``-safe shuffles."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence

import numpy as np

#: Probe splits, in the order used to salt random streams.
SPLITS: tuple[str, ...] = ("train", "test")


def seeded_rng(seed: int, salt: int, split: str) -> np.random.Generator:
    """Return the random stream of one (seed, task, split): growing n_test never changes train docs.

    Args:
        seed: The builder's seed.
        salt: The task's (or the purpose's) salt; each builder has its own.
        split: ``train`` or ``test``.
    """
    return np.random.default_rng([seed, salt, SPLITS.index(split)])


def stratified_order(seed: int, salt: int, groups: Sequence[Hashable]) -> list[int]:
    """Return a seeded order in which every prefix holds each group in about its overall share.

    Each group is permuted, its k-th member of n gets the key (k + u) / n with u uniform
    in [0, 1), and rows are sorted by key: a shuffle whose prefixes (lmms-eval's
    ``--limit``) still mix splits and labels. The stream is the one after the per-split
    streams of :func:`seeded_rng` (``[seed, salt, len(SPLITS)]``).

    Args:
        seed: The builder's seed.
        salt: The task's salt.
        groups: One group per row, e.g. ``(probe_split, label)``.

    Returns:
        Row indices in dataset order.
    """
    rng = np.random.default_rng([seed, salt, len(SPLITS)])
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, group in enumerate(groups):
        members[group].append(i)
    keys = np.empty(len(groups))
    for group in sorted(members, key=repr):  # fixed iteration order for determinism
        idx = np.asarray(members[group])[rng.permutation(len(members[group]))]
        keys[idx] = (np.arange(len(idx)) + rng.random(len(idx))) / len(idx)
    return [int(i) for i in np.argsort(keys, kind="stable")]


def label_quotas(n: int, k: int) -> list[int]:
    """Split ``n`` documents over ``k`` labels as evenly as possible (earlier labels get the remainder)."""
    return [n // k + (1 if i < n % k else 0) for i in range(k)]
