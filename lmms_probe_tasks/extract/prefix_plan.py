"""Plans shared-prefix extraction: groups documents by image and common prompt prefix into prefix batches.

Documents that show the same image(s) and whose token sequences agree up to and past
the last image token can run that common prefix (vision tower included) once; only
the rest of each document, its *suffix*, runs per document. This module decides which
documents do so and in which batches; it sees token ids only (numpy, no model).
:mod:`lmms_probe_tasks.extract.shared_prefix` runs the plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DocTokens:
    """What the planner needs to know about one document's prompt.

    Attributes:
        key: Identity of the document's images (e.g. their pixel digest); documents
            are only grouped with others of the same key.
        tokens: ``[seq]`` int64 token ids of the prompt (no padding).
        image_end: One past the last image position in ``tokens`` (0: none).
    """

    key: str
    tokens: np.ndarray
    image_end: int


@dataclass(frozen=True)
class PrefixBatch:
    """Groups whose common prefixes run as one forward pass.

    Attributes:
        length: Prefix tokens of every group in the batch (at least each group's
            ``image_end``, at most its shortest document's length minus one).
        groups: Per group, the ids of its documents; the first one's inputs are run
            for the prefix.
    """

    length: int
    groups: tuple[tuple[int, ...], ...]

    @property
    def docs(self) -> tuple[int, ...]:
        """The batch's documents, group by group."""
        return tuple(doc for group in self.groups for doc in group)

    @property
    def rows(self) -> tuple[int, ...]:
        """For each entry of :attr:`docs`, the row of its group in the prefix batch."""
        return tuple(row for row, group in enumerate(self.groups) for _ in group)


def common_prefix_length(sequences: Sequence[np.ndarray]) -> int:
    """Return how many leading tokens all sequences share.

    Args:
        sequences: One or more ``[seq]`` int arrays.

    Returns:
        The length of the longest common prefix.
    """
    shortest = min(len(seq) for seq in sequences)
    first = np.asarray(sequences[0][:shortest])
    agree = np.ones(shortest, dtype=bool)
    for seq in sequences[1:]:
        agree &= np.asarray(seq[:shortest]) == first
    return int(shortest if agree.all() else np.argmin(agree))


def share_windows(keys: Sequence[str], size: int) -> tuple[list[list[int]], list[int]]:
    """Split documents into windows of candidates for sharing (each key's documents together) and the rest.

    Windows bound how many documents are tokenised and planned at a time; a key with
    more than ``size`` documents gets a window of its own.

    Args:
        keys: Per document, the identity of its images (``""``: no image).
        size: Documents per window (a target, not a cap).

    Returns:
        ``(windows, alone)``: lists of document positions whose key occurs more than
        once, and the positions of the documents whose key is unique or empty.
    """
    by_key: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        by_key.setdefault(key, []).append(index)
    alone = sorted(i for key, members in by_key.items() if not key or len(members) < 2 for i in members)
    windows: list[list[int]] = []
    for key, members in by_key.items():
        if not key or len(members) < 2:
            continue
        if not windows or len(windows[-1]) + len(members) > size:
            windows.append([])
        windows[-1].extend(members)
    return windows, alone


def plan_prefix_batches(docs: Mapping[int, DocTokens], max_groups: int) -> tuple[list[PrefixBatch], list[int]]:
    """Group documents that can share a prefix, and batch the groups.

    A group is two or more documents with the same :attr:`DocTokens.key` and the
    same tokens up to ``image_end`` (> 0). Its prefix is their common prefix, capped
    so that every document keeps at least one suffix token. Groups with the same
    ``image_end`` are batched (``max_groups`` per batch, longest prefixes together)
    and the batch runs the shortest of its groups' prefixes, so that every prefix row
    has the same length and no padding.

    Args:
        docs: The documents to extract, by the caller's document id.
        max_groups: Most groups (prefix rows) per batch.

    Returns:
        ``(batches, alone)``: the prefix batches (groups name document ids), and the
        ids of the documents that share with no other (run whole, as without
        sharing), sorted.
    """
    by_head: dict[tuple[str, bytes], list[int]] = {}
    alone: list[int] = []
    for index, doc in docs.items():
        if doc.image_end <= 0 or doc.image_end >= len(doc.tokens):
            alone.append(index)
            continue
        head = np.asarray(doc.tokens[: doc.image_end], dtype=np.int64).tobytes()
        by_head.setdefault((doc.key, head), []).append(index)
    by_end: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
    for members in by_head.values():
        if len(members) < 2:
            alone.extend(members)
            continue
        tokens = [docs[i].tokens for i in members]
        length = min(common_prefix_length(tokens), min(len(t) for t in tokens) - 1)
        by_end.setdefault(docs[members[0]].image_end, []).append((length, tuple(members)))
    batches = []
    for _, groups in sorted(by_end.items()):
        groups.sort(key=lambda group: (-group[0], group[1]))
        for start in range(0, len(groups), max_groups):
            chunk = groups[start : start + max_groups]
            batches.append(PrefixBatch(length=min(length for length, _ in chunk), groups=tuple(g for _, g in chunk)))
    return batches, sorted(alone)
