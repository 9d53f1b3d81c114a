"""Draw the negatives of the COCO tasks: other images' captions (hard or random) and absent categories.

Hard caption negatives come from the ``neighbours`` images of the same split whose
category sets are most similar by Jaccard overlap |A ∩ B| / |A ∪ B| (ties broken by a
seeded random key); a caption whose text equals one of the image's own (case- and
whitespace-insensitive) is rejected. Absent categories are drawn uniformly (``random``),
by how many images of the split contain them (``popular``), or by how often they
co-occur with the image's present categories (``cooccur``). :func:`text_only_baseline`
measures what the category name alone predicts under the drawn negatives.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from lmms_probe_tasks.data.coco_source import CocoPool
from lmms_probe_tasks.data.sampling import seeded_rng

NEGATIVE_CAPTIONS: tuple[str, ...] = ("hard", "random")
NEGATIVE_CATEGORIES: tuple[str, ...] = ("random", "popular", "cooccur")
#: Salt of the tie-breaking stream (coco.py's builders use 10-13).
JITTER_SALT = 14
# Rows of the pool compared per matrix product when ranking neighbours (bounds memory
# to ~64 x 118k floats per array for train2017).
_SIM_CHUNK = 64


def jaccard(a: Sequence[int], b: Sequence[int]) -> float:
    """Return the Jaccard overlap of two category sets (0 when both are empty)."""
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 0.0


def rank_neighbours(pool: CocoPool, keys: Sequence[str], m: int, seed: int) -> dict[str, list[str]]:
    """Return, for each image in ``keys``, the ``m`` most similar other images of the pool.

    Similarity is the Jaccard overlap of the two images' category sets; ties (frequent:
    many images hold just ``person``) are broken by a seeded random key per pool image.

    Args:
        pool: The split's eligible images.
        keys: Images to rank neighbours for (ids of ``pool``).
        m: Neighbours per image (capped at pool size - 1).
        seed: Seed of the tie-breaking key.

    Returns:
        Image id -> neighbour ids, most similar first.
    """
    m = min(m, len(pool.ids) - 1)
    if m < 1 or not keys:
        return {key: [] for key in keys}
    x = pool.multi_hot()
    sizes = x.sum(axis=1)
    jitter = seeded_rng(seed, JITTER_SALT, pool.split).random(len(pool.ids)) * 1e-6
    index = {key: i for i, key in enumerate(pool.ids)}
    out: dict[str, list[str]] = {}
    for start in range(0, len(keys), _SIM_CHUNK):
        chunk = list(keys[start : start + _SIM_CHUNK])
        rows = np.array([index[k] for k in chunk])
        inter = x[rows] @ x.T
        sim = inter / (sizes[rows, None] + sizes[None, :] - inter) + jitter
        sim[np.arange(len(rows)), rows] = -np.inf  # never the image itself
        top = np.argpartition(-sim, m - 1, axis=1)[:, :m]
        for r, key in enumerate(chunk):
            best = top[r][np.argsort(-sim[r, top[r]], kind="stable")]
            out[key] = [pool.ids[j] for j in best]
    return out


def pick_negatives(
    pool: CocoPool, key: str, m: int, ranked: list[str] | None, rng: np.random.Generator, stats: dict[str, int]
) -> list[tuple[str, str]]:
    """Pick ``m`` (caption, source image id) negatives for image ``key`` from distinct other images.

    Args:
        pool: The split's eligible images with their captions.
        key: The image the negatives are for.
        m: Negatives wanted.
        ranked: Its hard-negative candidates (most similar first), or None for random negatives.
        rng: The split's random stream.
        stats: Counters ``rejected_same_text`` and ``fallback_random``, updated in place.

    Returns:
        ``m`` pairs (caption text, id of the image it was written for).

    Raises:
        RuntimeError: No other image has a caption distinct from the image's own.
    """
    own = {text.lower().rstrip(" .") for text in pool.captions[key]}
    picked: list[tuple[str, str]] = []

    def take(candidates: Sequence[str]) -> None:
        for other in candidates:
            if len(picked) == m:
                return
            if other == key or any(other == o for _, o in picked):
                continue
            texts = [t for t in pool.captions[other] if t.lower().rstrip(" .") not in own]
            if len(texts) < len(pool.captions[other]):
                stats["rejected_same_text"] += len(pool.captions[other]) - len(texts)
            if texts:
                picked.append((texts[int(rng.integers(len(texts)))], other))

    if ranked is not None:
        take([ranked[i] for i in rng.permutation(len(ranked))])
        if len(picked) < m:
            stats["fallback_random"] += m - len(picked)
    if len(picked) < m:
        # Random mode, or too few usable hard candidates: any other image of the split.
        size = min(len(pool.ids), 4 * m + 8)
        take([pool.ids[i] for i in rng.choice(len(pool.ids), size=size, replace=False)])
    if len(picked) < m:
        take([pool.ids[i] for i in rng.permutation(len(pool.ids))])
    if len(picked) < m:
        raise RuntimeError(f"COCO {pool.source_split}: no other image has a caption distinct from image {key}'s")
    return picked


def category_stats(pool: CocoPool) -> tuple[np.ndarray, np.ndarray]:
    """Return the split's ``[n_categories]`` image counts and ``[n_categories, n_categories]`` co-occurrence counts.

    Both float64; the co-occurrence diagonal is zero.
    """
    x = pool.multi_hot()
    frequency = x.sum(axis=0).astype(np.float64)
    cooccur = (x.T @ x).astype(np.float64)
    np.fill_diagonal(cooccur, 0.0)
    return frequency, cooccur


def draw_absent(
    rng: np.random.Generator,
    present: np.ndarray,
    absent: np.ndarray,
    m: int,
    negatives: str,
    stats: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """Draw ``m`` distinct absent categories for one image.

    Args:
        rng: The split's random stream.
        present: The image's category indices.
        absent: The other category indices.
        m: How many to draw (<= ``len(absent)``).
        negatives: ``random``, ``popular`` or ``cooccur`` (see the module docstring).
        stats: The split's :func:`category_stats`.

    Returns:
        ``[m]`` category indices.
    """
    frequency, cooccur = stats
    if negatives == "random":
        weights = np.ones(len(absent))
    elif negatives == "popular":
        weights = frequency[absent]
    else:
        weights = cooccur[present][:, absent].sum(axis=0)
    # A tiny floor keeps every absent category drawable when few have weight.
    weights = weights + 1e-9 * max(float(weights.sum()), 1.0)
    return rng.choice(absent, size=m, replace=False, p=weights / weights.sum())


def text_only_baseline(train: list[dict], test: list[dict]) -> float | None:
    """Return the accuracy on probe-test of predicting each category's majority probe-train label (the name-only prior).

    Args:
        train: Probe-train docs with ``category`` and ``label``.
        test: Probe-test docs with ``category`` and ``label``.

    Returns:
        The accuracy in [0, 1], or None without test docs. Ties and unseen categories
        get the overall probe-train majority (present on a tie).
    """
    if not test:
        return None
    tally = Counter((row["category"], row["label"]) for row in train)
    overall = int(sum(r["label"] for r in train) * 2 >= len(train)) if train else 1
    hits = 0
    for row in test:
        absent, present = tally[(row["category"], 0)], tally[(row["category"], 1)]
        guess = overall if absent == present else int(present > absent)
        hits += int(guess == row["label"])
    return hits / len(test)
