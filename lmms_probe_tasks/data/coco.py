"""Build the COCO probe tasks (caption entailment, object presence, multi-label objects) from COCO 2017.

Each builder returns a :class:`~lmms_probe_tasks.data.contract.BuiltDocs`: one seeded,
stratified shuffle of probe-train documents (images of COCO **train2017**) and probe-test
documents (images of **val2017**), so no image is on both sides, and the data report.
Pools of eligible images come from :mod:`~lmms_probe_tasks.data.coco_source` (local
release or hub join), negatives from :mod:`~lmms_probe_tasks.data.coco_negatives`.

Tasks
    ``coco_entailment_docs`` (global; the paper's task). Per image, ``captions_per_image``
    (k, default 2) of its own captions are positives (``entailed``) and k captions of
    *other* images are negatives (``not_entailed``): by default (``negatives="hard"``)
    from the ``neighbours`` (default 25) images of the split with the most similar
    category sets, else (``random``) from any other image; never one of the image's own
    captions. Columns ``caption_image_id`` (the image the caption was written for) and
    ``similarity`` (Jaccard overlap of the two category sets; 1 for positives) record the
    construction. A hard negative can still be true of the image (two tennis scenes), as
    in the paper's design.

    ``coco_object_docs`` (local; the paper's task). Per image, k = ``categories_per_image``
    (default 2) present categories are positives and k absent ones negatives (``random``
    by default, ``popular`` or ``cooccur``); ``text`` is the category name the prompt asks
    about. With ``random``, the name alone predicts much of the label (person is mostly
    present, hair drier mostly absent); the report's ``text_only_baseline_acc`` measures
    that prior on probe-test.

    ``coco_multilabel_docs`` (local, ours). One document per image, ``text`` "" (the
    prompt names no category); ``labels`` = the sorted contiguous indices of the
    categories present (80 classes). ``category``/``labels`` are ``ClassLabel`` features.

Sizes, sampling, skips
    ``n_train``/``n_test`` count documents (default 10,000 / 2,000). Eligible images are
    walked in a seeded order; only the images needed are opened and decoded. Labels are
    balanced per image (the last image may be cut: a split is balanced to within one
    document). Bad data is skipped and counted in the report (one warning names the
    counts): ``missing_image``, ``corrupt_image`` and the annotation problems of
    :mod:`~lmms_probe_tasks.data.coco_source`. A split with fewer usable documents than
    requested uses them all and says so in one warning.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import datasets
import numpy as np

from lmms_probe_tasks.data.coco_negatives import (
    NEGATIVE_CAPTIONS,
    NEGATIVE_CATEGORIES,
    category_stats,
    draw_absent,
    jaccard,
    pick_negatives,
    rank_neighbours,
    text_only_baseline,
)
from lmms_probe_tasks.data.coco_source import (
    CATEGORY_NAMES,
    COCO_CATEGORIES,
    ENV_VAR,
    HUB_CAPTIONS,
    HUB_IMAGES,
    CocoPool,
    check_pools,
    load_pools,
)
from lmms_probe_tasks.data.contract import N_TEST, N_TRAIN, BuiltDocs, check_choice, check_int, check_sizes
from lmms_probe_tasks.data.images import ImageValue
from lmms_probe_tasks.data.reports import doc_features, doc_row, finish_docs, label_counts, split_head, start_report
from lmms_probe_tasks.data.sampling import SPLITS, seeded_rng
from lmms_probe_tasks.data.sources import SourceProblem, one_doc, select_in_order, with_source_check

# The public names of the COCO tasks, including those defined in coco_source / coco_negatives.
__all__ = [
    "CATEGORY_NAMES",
    "COCO_CATEGORIES",
    "ENTAILMENT_LABELS",
    "ENV_VAR",
    "HUB_CAPTIONS",
    "HUB_IMAGES",
    "NEGATIVE_CAPTIONS",
    "NEGATIVE_CATEGORIES",
    "OBJECT_LABELS",
    "CocoPool",
    "coco_entailment_docs",
    "coco_multilabel_docs",
    "coco_object_docs",
    "rank_neighbours",
    "text_only_baseline",
]

ENTAILMENT_LABELS: tuple[str, ...] = ("not_entailed", "entailed")
OBJECT_LABELS: tuple[str, ...] = ("absent", "present")
# Salts of the random streams (coco_negatives uses 14 for its tie-breaking key).
_SALT = {"ent": 10, "obj": 11, "ml": 12, "order": 13}


# -------------------------------------------------------------- shared steps
def _walk(pool: CocoPool, seed: int, n: int, yield_of: Callable[[str], int]) -> tuple[list[str], dict[str, ImageValue]]:
    """Choose images in a seeded order until they give ``n`` documents, opening only those."""
    rng = seeded_rng(seed, _SALT["order"], pool.split)
    usable = [pool.ids[i] for i in rng.permutation(len(pool.ids)) if yield_of(pool.ids[i]) > 0]
    return select_in_order(usable, n, yield_of, pool.fetch, pool.skips)


def _caption_yield(pool: CocoPool, k: int, key: str) -> int:
    """Documents an image gives in the entailment task: k (or fewer) positives and as many negatives."""
    return 2 * min(k, len(pool.captions[key]))


def _object_yield(pool: CocoPool, k: int, key: str) -> int:
    """Documents an image gives in the objects task: as many present as absent categories, at most k each."""
    present = len(pool.categories[key])
    return 2 * min(k, present, len(pool.names) - present)


def _split_report(
    pool: CocoPool, requested: int, docs: list[dict], label_key: str, names: Sequence[str]
) -> dict[str, Any]:
    report: dict[str, Any] = {
        **split_head(pool.source_split, requested, docs),
        "eligible_images": len(pool.ids),
        "skipped": pool.skips.to_dict(),
        "excluded": dict(sorted(pool.excluded.items())),
    }
    if label_key == "labels":
        per_class = label_counts((c for d in docs for c in d["labels"]), names)
        report["label_counts"] = per_class
        report["mean_labels_per_image"] = float(np.mean([len(d["labels"]) for d in docs])) if docs else 0.0
        report["classes_without_positives"] = [name for name, c in per_class.items() if c == 0]
    else:
        report["label_counts"] = label_counts((d[label_key] for d in docs), names)
    return report


def _pair_uid(task: str, pool: CocoPool, key: str, label: int, j: int) -> str:
    return f"coco-{task}-{pool.split}-{key}-{'p' if label else 'n'}{j}"


# ---------------------------------------------------------------- entailment
def _entailment_split(
    pool: CocoPool, seed: int, n: int, k: int, negatives: str, neighbours: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Build one split's entailment docs (``n`` or fewer) and its report."""
    if len(pool.ids) < 2:
        raise RuntimeError(
            f"COCO {pool.source_split} has {len(pool.ids)} usable image(s); entailment needs at least 2 "
            "(negatives come from other images): point LMMS_PROBE_COCO_DIR at the full release"
        )
    chosen, images = _walk(pool, seed, n, functools.partial(_caption_yield, pool, k))
    ranked = rank_neighbours(pool, chosen, neighbours, seed) if negatives == "hard" else {}
    rng = seeded_rng(seed, _SALT["ent"], pool.split)
    rows: list[dict[str, Any]] = []
    stats = {"rejected_same_text": 0, "fallback_random": 0}
    for key in chosen:
        own = pool.captions[key]
        m = min(k, len(own))
        positives = [own[i] for i in rng.choice(len(own), size=m, replace=False)]
        picked = pick_negatives(pool, key, m, ranked.get(key), rng, stats)
        for j in range(m):
            for label, (text, other) in ((1, (positives[j], key)), (0, picked[j])):
                similarity = 1.0 if label else jaccard(pool.categories[key], pool.categories[other])
                uid = _pair_uid("ent", pool, key, label, j)
                rows.append(
                    doc_row(
                        uid,
                        pool.split,
                        images[key],
                        key,
                        text,
                        label=label,
                        caption_image_id=other,
                        similarity=similarity,
                    )
                )
    rows = rows[:n]  # the last image may give more than needed; pos/neg alternate, so balance holds to within 1
    report = _split_report(pool, n, rows, "label", ENTAILMENT_LABELS)
    negs = [r["similarity"] for r in rows if r["label"] == 0]
    report["negatives"] = {"mean_jaccard": float(np.mean(negs)) if negs else None, **stats}
    return rows, report


# Source checks (run before any task is built): the builder's arguments, defaults filled in.
def _caption_source(
    source: str, coco_dir: str | None, hub_images: str, hub_captions: str, **_: Any
) -> SourceProblem | None:
    """Check the sources of a task that reads captions and instances."""
    return check_pools(source, coco_dir, hub_images, hub_captions, need_captions=True)


def _instance_source(source: str, coco_dir: str | None, hub_images: str, **_: Any) -> SourceProblem | None:
    """Check the sources of a task that reads instances only."""
    return check_pools(source, coco_dir, hub_images, HUB_CAPTIONS, need_captions=False)


@with_source_check(_caption_source)
def coco_entailment_docs(
    n_train: int = N_TRAIN,
    n_test: int = N_TEST,
    seed: int = 0,
    captions_per_image: int = 2,
    negatives: str = "hard",
    neighbours: int = 25,
    source: str = "auto",
    coco_dir: str | None = None,
    hub_images: str = HUB_IMAGES,
    hub_captions: str = HUB_CAPTIONS,
) -> BuiltDocs:
    """Build the image-caption entailment task (see the module docstring for the design).

    Args:
        n_train: Probe-train documents (train2017 images).
        n_test: Probe-test documents (val2017 images).
        seed: Sampling seed.
        captions_per_image: k: own captions (positives) and other images' captions
            (negatives) per image.
        negatives: ``hard`` (from the ``neighbours`` most similar images by category
            Jaccard) or ``random`` (any other image of the split).
        neighbours: Size of the hard-negative candidate set per image.
        source: ``auto``, ``local`` or ``hub``.
        coco_dir: Folder of the original release (default: ``$LMMS_PROBE_COCO_DIR``).
        hub_images: Hub id (or local folder in its layout) of images + instance categories.
        hub_captions: Hub id (or local folder in its layout) of the captions.

    Returns:
        The documents (columns ``uid``, ``probe_split``, ``image``, ``image_id``, ``text``
        = the caption, ``label`` = ClassLabel not_entailed/entailed, ``caption_image_id``,
        ``similarity``) and the data report.

    Raises:
        ValueError: An argument is out of range.
        FileNotFoundError: The local folder or an annotation file is missing.
        RuntimeError: The hub copies cannot be loaded or do not join.
    """
    n_train, n_test, seed = check_sizes(n_train, n_test, seed)
    k = check_int("captions_per_image", captions_per_image, 1, 2)
    negatives = check_choice("negatives", negatives, NEGATIVE_CAPTIONS)
    neighbours = check_int("neighbours", neighbours, 1, 25)
    pools, origin = load_pools(source, coco_dir, hub_images, hub_captions, need_captions=True)
    params = {"n_train": n_train, "n_test": n_test, "seed": seed}
    params.update(captions_per_image=k, negatives=negatives, neighbours=neighbours)
    report = start_report("coco_entailment", origin, params)
    rows: list[dict[str, Any]] = []
    for split, n in zip(SPLITS, (n_train, n_test), strict=True):
        split_rows, report["splits"][split] = _entailment_split(pools[split], seed, n, k, negatives, neighbours)
        rows += split_rows
    features = doc_features(
        {
            "label": datasets.ClassLabel(names=list(ENTAILMENT_LABELS)),
            "caption_image_id": datasets.Value("string"),
            "similarity": datasets.Value("float32"),
        }
    )
    return finish_docs("coco_entailment_docs", rows, features, seed, _SALT["ent"], "label", report)


# ------------------------------------------------------------------- objects
def _object_split(
    pool: CocoPool, seed: int, n: int, k: int, negatives: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Build one split's object-presence docs (``n`` or fewer) and its report."""
    stats = category_stats(pool)
    chosen, images = _walk(pool, seed, n, functools.partial(_object_yield, pool, k))
    rng = seeded_rng(seed, _SALT["obj"], pool.split)
    n_cat = len(pool.names)
    rows: list[dict[str, Any]] = []
    for key in chosen:
        present = np.array(pool.categories[key])
        absent = np.setdiff1d(np.arange(n_cat), present)
        m = _object_yield(pool, k, key) // 2
        pos = rng.choice(present, size=m, replace=False)
        neg = draw_absent(rng, present, absent, m, negatives, stats)
        for j in range(m):
            for label, category in ((1, int(pos[j])), (0, int(neg[j]))):
                uid = _pair_uid("obj", pool, key, label, j)
                rows.append(
                    doc_row(uid, pool.split, images[key], key, pool.names[category], category=category, label=label)
                )
    rows = rows[:n]
    report = _split_report(pool, n, rows, "label", OBJECT_LABELS)
    tally = Counter((r["category"], r["label"]) for r in rows)
    report["category_counts"] = {
        pool.names[c]: {"present": tally[(c, 1)], "absent": tally[(c, 0)]}
        for c in range(n_cat)
        if tally[(c, 1)] or tally[(c, 0)]
    }
    return rows, report


# Every builder spells out the contract's arguments (sizes, seed, source and its folders)
# as keywords, so a YAML key is a visible parameter: the signatures and their Args repeat.
@with_source_check(_instance_source)
def coco_object_docs(
    n_train: int = N_TRAIN,
    n_test: int = N_TEST,
    seed: int = 0,
    categories_per_image: int = 2,
    negatives: str = "random",
    source: str = "auto",
    coco_dir: str | None = None,
    hub_images: str = HUB_IMAGES,
) -> BuiltDocs:
    """Build the object-presence task: is the named category in the image? (module docstring).

    Args:
        n_train: Probe-train documents (train2017 images).
        n_test: Probe-test documents (val2017 images).
        seed: Sampling seed.
        categories_per_image: k: present (positive) and absent (negative) categories per
            image (fewer when the image has fewer than k present categories).
        negatives: How absent categories are drawn: ``random``, ``popular`` or ``cooccur``.
        source: ``auto``, ``local`` or ``hub``.
        coco_dir: Folder of the original release (default: ``$LMMS_PROBE_COCO_DIR``).
        hub_images: Hub id (or local folder in its layout) of images + instance categories.

    Returns:
        The documents (columns ``uid``, ``probe_split``, ``image``, ``image_id``, ``text``
        = the category name, ``category`` = ClassLabel of the 80 names, ``label`` =
        ClassLabel absent/present) and the data report (with ``text_only_baseline_acc``).

    Raises:
        ValueError: An argument is out of range.
        FileNotFoundError: The local folder or an annotation file is missing.
        RuntimeError: The hub copy cannot be loaded.
    """
    n_train, n_test, seed = check_sizes(n_train, n_test, seed)
    k = check_int("categories_per_image", categories_per_image, 1, 2)
    negatives = check_choice("negatives", negatives, NEGATIVE_CATEGORIES)
    pools, origin = load_pools(source, coco_dir, hub_images, HUB_CAPTIONS, need_captions=False)
    params = {"n_train": n_train, "n_test": n_test, "seed": seed, "categories_per_image": k, "negatives": negatives}
    report = start_report("coco_objects", origin, params)
    docs: dict[str, list[dict[str, Any]]] = {}
    for split, n in zip(SPLITS, (n_train, n_test), strict=True):
        docs[split], report["splits"][split] = _object_split(pools[split], seed, n, k, negatives)
    report["text_only_baseline_acc"] = text_only_baseline(docs["train"], docs["test"])
    features = doc_features(
        {
            "category": datasets.ClassLabel(names=list(pools["train"].names)),
            "label": datasets.ClassLabel(names=list(OBJECT_LABELS)),
        }
    )
    rows = docs["train"] + docs["test"]
    return finish_docs("coco_object_docs", rows, features, seed, _SALT["obj"], "label", report)


# ---------------------------------------------------------------- multilabel
@with_source_check(_instance_source)
def coco_multilabel_docs(
    n_train: int = N_TRAIN,
    n_test: int = N_TEST,
    seed: int = 0,
    source: str = "auto",
    coco_dir: str | None = None,
    hub_images: str = HUB_IMAGES,
) -> BuiltDocs:
    """Build the multi-label objects task: which of the 80 categories are in the image?

    Args:
        n_train: Probe-train documents = images of train2017.
        n_test: Probe-test documents = images of val2017.
        seed: Sampling seed.
        source: ``auto``, ``local`` or ``hub``.
        coco_dir: Folder of the original release (default: ``$LMMS_PROBE_COCO_DIR``).
        hub_images: Hub id (or local folder in its layout) of images + instance categories.

    Returns:
        The documents (columns ``uid``, ``probe_split``, ``image``, ``image_id``, ``text``
        = "", ``labels`` = list of ClassLabel over the 80 names) and the data report
        (per-class positive counts per split).

    Raises:
        ValueError: An argument is out of range.
        FileNotFoundError: The local folder or an annotation file is missing.
        RuntimeError: The hub copy cannot be loaded.
    """
    n_train, n_test, seed = check_sizes(n_train, n_test, seed)
    pools, origin = load_pools(source, coco_dir, hub_images, HUB_CAPTIONS, need_captions=False)
    names = pools["train"].names
    report = start_report("coco_multilabel", origin, {"n_train": n_train, "n_test": n_test, "seed": seed})
    rows: list[dict[str, Any]] = []
    for split, n in zip(SPLITS, (n_train, n_test), strict=True):
        pool = pools[split]
        chosen, images = _walk(pool, seed, n, one_doc)
        docs = [
            doc_row(f"coco-ml-{split}-{key}", split, images[key], key, "", labels=list(pool.categories[key]))
            for key in chosen
        ]
        report["splits"][split] = _split_report(pool, n, docs, "labels", names)
        rows += docs
    features = doc_features({"labels": datasets.List(datasets.ClassLabel(names=list(names)))})
    return finish_docs("coco_multilabel_docs", rows, features, seed, _SALT["ml"], None, report)
