"""Build the COCO probe tasks (caption entailment, object presence, multi-label objects) from COCO 2017.

Three builders, one per task; each returns ``(datasets.Dataset, report)``: one seeded,
stratified shuffle of probe-train documents (images of COCO **train2017**) and probe-test
documents (images of **val2017**), so no image is on both sides.

Tasks
    ``coco_entailment_docs`` (global; the paper's task). Per image, ``captions_per_image``
    (k, default 2) of its own captions are positives (``entailed``) and k captions of
    *other* images are negatives (``not_entailed``). Hard negatives (default,
    ``negatives="hard"``): the other image is drawn among the ``neighbours`` (default 25)
    images of the same COCO split whose object-category sets are most similar to this
    image's, by Jaccard overlap |A ∩ B| / |A ∪ B| of the category sets from the instance
    annotations (ties broken by a seeded random key). ``negatives="random"`` draws the
    other image uniformly. A negative is never one of the image's own captions: it comes
    from another image id, and a caption whose text equals one of the image's own
    (case- and whitespace-insensitive) is rejected. Columns ``caption_image_id`` (the image
    the caption was written for) and ``similarity`` (that Jaccard overlap; 1 for
    positives) record the construction. Note that a hard negative can still be true of the
    image (two tennis scenes), as in the paper's design.

    ``coco_object_docs`` (local; the paper's task). Per image, k = ``categories_per_image``
    (default 2) present categories (from the instance annotations) are positives and k
    absent categories are negatives; ``text`` is the category name the prompt asks about.
    Negatives (``negatives``): ``random`` (uniform over absent categories, default),
    ``popular`` (in proportion to how many images of the split contain the category), or
    ``cooccur`` (in proportion to how often the category co-occurs with the image's present
    categories in the split: the hardest). With ``random``, a category's name alone predicts
    much of the label (person is mostly present, hair drier mostly absent); the report's
    ``text_only_baseline_acc`` measures that prior on probe-test.

    ``coco_multilabel_docs`` (local, ours). One document per image with a prompt naming no
    category (``text`` is ""); ``labels`` = the sorted contiguous indices of the categories
    present (multi-label, 80 classes).

Categories
    COCO category ids run 1-90 with ten gaps; they map to 80 contiguous indices by sorted
    id (``COCO_CATEGORIES``): 1 person -> 0, 13 stop sign -> 11, 90 toothbrush -> 79.
    ``category``/``labels`` columns are ``ClassLabel`` features carrying the 80 names.

Sources (``source``: ``auto`` | ``local`` | ``hub``)
    *Local*: the original release in the folder named by ``coco_dir`` or the environment
    variable ``LMMS_PROBE_COCO_DIR``: ``annotations/captions_{train,val}2017.json``,
    ``annotations/instances_{train,val}2017.json``, ``train2017/``, ``val2017/``. ``auto``
    uses it whenever the folder is given. The object tasks do not read the caption files.

    *Hub* (default when no folder is set): a join of two hub copies on COCO's
    ``image_id``, because no single parquet copy has images, captions and instance
    categories for train2017 and val2017:

    * ``hub_images="detection-datasets/coco"``: images and instance categories
      (``image_id``, ``image``, ``objects.category`` as an 80-name ``ClassLabel``); splits
      ``train`` (train2017) and ``val`` (val2017), images without instances left out.
    * ``hub_captions="phiyodr/coco2017"``: captions only, a ~30 MB download (``image_id``,
      ``captions``); splits ``train`` and ``validation``.

    The join is checked: if fewer than half the images of a split find their captions, the
    two copies do not share image ids and the builder raises. Both arguments also accept
    a local folder of parquet files in the hub layout (``data/<split>-*.parquet``), read
    through the same ``datasets.load_dataset`` call. Hub data is streamed: the
    annotation columns first (column projection, no image bytes), then only the selected
    images (a parquet filter on ``image_id``), each decoded once and written to
    ``$HF_DATASETS_CACHE/lmms_probe_tasks/images`` so documents hold file paths.

Sizes, sampling, skips
    ``n_train``/``n_test`` count documents (default 10,000 / 2,000). Eligible images (at
    least one instance annotation, and for entailment at least one non-empty caption)
    are walked in a seeded order; only the images needed are opened and decoded. Labels
    are balanced per image (k positives, k negatives; the last image may be cut, so a
    split is balanced to within one document). Bad data is skipped and counted in the
    report with the first ids (one warning names the counts): ``missing_image``,
    ``corrupt_image``, ``empty_caption``, ``absent_from_instances`` (a caption's image id
    not in the instance file), ``absent_from_captions`` (hub: an image without captions),
    ``annotation_of_unknown_image``, ``unknown_category_id``. Images that are merely not
    eligible (``no_objects``, ``no_captions``) are counted under ``excluded``. A split
    with fewer usable documents than requested uses them all and says so in one warning.
    A missing folder or annotation file raises with the path and the fix.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from loguru import logger

from lmms_probe_tasks.data.common import (
    CORRUPT_IMAGE,
    SPLITS,
    Fetched,
    ImageValue,
    SkipLog,
    check_choice,
    check_image_files,
    check_int,
    check_sizes,
    counts,
    image_cache_dir,
    open_stream,
    require_file,
    resolve_source,
    seeded_rng,
    select_in_order,
    store_image_bytes,
    stratified_order,
    summarize_problems,
)

#: COCO 2017's 80 categories as (id, name), sorted by id; ids 12, 26, 29, 30, 45, 66,
#: 68, 69, 71, 83 are unused. The position in this tuple is the contiguous index.
# fmt: off
COCO_CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"),
    (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"),
    (13, "stop sign"), (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"),
    (19, "horse"), (20, "sheep"), (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"),
    (25, "giraffe"), (27, "backpack"), (28, "umbrella"), (31, "handbag"), (32, "tie"),
    (33, "suitcase"), (34, "frisbee"), (35, "skis"), (36, "snowboard"), (37, "sports ball"),
    (38, "kite"), (39, "baseball bat"), (40, "baseball glove"), (41, "skateboard"),
    (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"),
    (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"),
    (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"),
    (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"), (63, "couch"),
    (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"), (72, "tv"),
    (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"), (77, "cell phone"),
    (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"), (82, "refrigerator"),
    (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"),
    (89, "hair drier"), (90, "toothbrush"),
)
# fmt: on
CATEGORY_NAMES: tuple[str, ...] = tuple(name for _, name in COCO_CATEGORIES)
ENTAILMENT_LABELS: tuple[str, ...] = ("not_entailed", "entailed")
OBJECT_LABELS: tuple[str, ...] = ("absent", "present")

ENV_VAR = "LMMS_PROBE_COCO_DIR"
HUB_IMAGES = "detection-datasets/coco"
HUB_CAPTIONS = "phiyodr/coco2017"
#: COCO release split behind each probe split, and its name in each hub copy.
SOURCE_SPLITS = {"train": "train2017", "test": "val2017"}
HUB_IMAGE_SPLITS = {"train": "train", "test": "val"}
HUB_CAPTION_SPLITS = {"train": "train", "test": "validation"}
NEGATIVE_CAPTIONS: tuple[str, ...] = ("hard", "random")
NEGATIVE_CATEGORIES: tuple[str, ...] = ("random", "popular", "cooccur")
#: Below this share of images with captions, the two hub copies do not join.
MIN_JOIN_SHARE = 0.5
_SALT = {"ent": 10, "obj": 11, "ml": 12, "order": 13, "jitter": 14}
# Rows of the pool compared per matrix product when ranking neighbours (bounds memory
# to ~64 x 118k floats per array for train2017).
_SIM_CHUNK = 64


# --------------------------------------------------------------------- pools
@dataclass
class CocoPool:
    """The eligible images of one COCO split, their annotations, and how to fetch their pixels.

    Attributes:
        split: Probe split, "train" or "test".
        source_split: COCO split, e.g. "train2017".
        names: Category names by contiguous index.
        ids: Eligible image ids (str), sorted numerically.
        categories: Image id -> sorted contiguous category indices present (non-empty).
        captions: Image id -> its non-empty captions (whitespace-normalised); empty when
            the task needs none.
        fetch: Maps a batch of image ids to image values or skip reasons.
        skips: Bad items met so far.
        excluded: Counts of images that are not eligible, by reason.
    """

    split: str
    source_split: str
    names: tuple[str, ...]
    ids: list[str]
    categories: dict[str, tuple[int, ...]]
    captions: dict[str, list[str]]
    fetch: Callable[[list[str]], dict[str, Fetched]]
    skips: SkipLog = field(default_factory=SkipLog)
    excluded: dict[str, int] = field(default_factory=dict)

    def multi_hot(self) -> np.ndarray:
        """Return ``[len(ids), n_categories]`` float32 presence indicators, rows in ``ids`` order."""
        x = np.zeros((len(self.ids), len(self.names)), dtype=np.float32)
        for row, key in enumerate(self.ids):
            x[row, list(self.categories[key])] = 1.0
        return x


def _normalise(text: str) -> str:
    # COCO captions carry stray newlines and double spaces.
    return " ".join(text.split())


def _numeric_sort(ids: Any) -> list[str]:
    return sorted(ids, key=lambda k: (len(k), k))


@dataclass(frozen=True)
class _Instances:
    names: tuple[str, ...]
    files: dict[str, str]
    categories: dict[str, tuple[int, ...]]
    events: tuple[tuple[str, str], ...]


@functools.lru_cache(maxsize=4)
def _read_instances(path: str, stamp: tuple[int, int]) -> _Instances:
    """Parse an instances file into a compact form (cached: three tasks share one parse)."""
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    cats = sorted(raw["categories"], key=lambda c: int(c["id"]))
    index = {int(c["id"]): i for i, c in enumerate(cats)}
    files = {str(im["id"]): str(im["file_name"]) for im in raw["images"]}
    found: dict[str, set[int]] = {}
    events: list[tuple[str, str]] = []
    for ann in raw["annotations"]:
        key = str(ann["image_id"])
        if key not in files:
            events.append(("annotation_of_unknown_image", key))
            continue
        category = index.get(int(ann["category_id"]))
        if category is None:
            events.append(("unknown_category_id", f"{key}:{ann['category_id']}"))
            continue
        found.setdefault(key, set()).add(category)
    return _Instances(
        tuple(str(c["name"]) for c in cats),
        files,
        {k: tuple(sorted(v)) for k, v in found.items()},
        tuple(events),
    )


@functools.lru_cache(maxsize=4)
def _read_captions(path: str, stamp: tuple[int, int]) -> tuple[dict[str, list[str]], tuple[tuple[str, str], ...]]:
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    captions: dict[str, list[str]] = {}
    events: list[tuple[str, str]] = []
    for ann in raw["annotations"]:
        key, text = str(ann["image_id"]), ann.get("caption")
        if not isinstance(text, str) or not text.strip():
            events.append(("empty_caption", key))
            continue
        captions.setdefault(key, []).append(_normalise(text))
    return captions, tuple(events)


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


def _local_pool(root: Path, split: str, need_captions: bool) -> CocoPool:
    source_split = SOURCE_SPLITS[split]
    instances_path = require_file(
        root / "annotations" / f"instances_{source_split}.json", "COCO instance annotations", ENV_VAR
    )
    image_dir = root / source_split
    if not image_dir.is_dir():
        raise FileNotFoundError(
            f"COCO image folder not found: {image_dir}. The folder named by {ENV_VAR} must hold "
            f"{source_split}/ with the release's images; unzip {source_split}.zip there or fix {ENV_VAR}."
        )
    inst = _read_instances(str(instances_path), _stamp(instances_path))
    pool = CocoPool(split, source_split, inst.names, [], {}, {}, fetch=lambda ids: {})
    for reason, item in inst.events:
        pool.skips.add(reason, item)
    captions: dict[str, list[str]] = {}
    if need_captions:
        captions_path = require_file(root / "annotations" / f"captions_{source_split}.json", "COCO captions", ENV_VAR)
        captions, events = _read_captions(str(captions_path), _stamp(captions_path))
        for reason, item in events:
            pool.skips.add(reason, item)
        for key in _numeric_sort(set(captions) - set(inst.files)):
            pool.skips.add("absent_from_instances", key)
    eligible = []
    for key in _numeric_sort(inst.files):
        if key not in inst.categories:
            pool.excluded["no_objects"] = pool.excluded.get("no_objects", 0) + 1
        elif need_captions and not captions.get(key):
            pool.excluded["no_captions"] = pool.excluded.get("no_captions", 0) + 1
        else:
            eligible.append(key)
    pool.ids = eligible
    pool.categories = {k: inst.categories[k] for k in eligible}
    pool.captions = {k: captions[k] for k in eligible} if need_captions else {}
    pool.fetch = lambda ids: check_image_files({k: image_dir / inst.files[k] for k in ids})
    return pool


def _open(source: str, split: str, columns: list[str], filters: list | None = None) -> datasets.IterableDataset:
    return open_stream(source, split, columns, ENV_VAR, filters)


def _hub_category_map(features: datasets.Features, source: str) -> dict[int, int]:
    """Map the hub copy's category ClassLabel indices to ours, by name."""
    objects = features.get("objects")
    category = objects.get("category") if isinstance(objects, dict) else None
    label = getattr(category, "feature", category)
    if not isinstance(label, datasets.ClassLabel):
        raise ValueError(
            f"{source}: expected an 'objects.category' ClassLabel feature (the layout of {HUB_IMAGES}); "
            f"got {objects!r}. Pass hub_images= a copy in that layout, or use the original release via {ENV_VAR}."
        )
    ours = {name: i for i, name in enumerate(CATEGORY_NAMES)}
    unknown = [name for name in label.names if name not in ours]
    if unknown:
        raise ValueError(f"{source}: categories {unknown} are not COCO's 80 ({', '.join(CATEGORY_NAMES[:3])}, ...)")
    return {i: ours[name] for i, name in enumerate(label.names)}


def _hub_pool(split: str, hub_images: str, hub_captions: str, need_captions: bool) -> CocoPool:
    source_split = SOURCE_SPLITS[split]
    image_split = HUB_IMAGE_SPLITS[split]
    pool = CocoPool(split, source_split, CATEGORY_NAMES, [], {}, {}, fetch=lambda ids: {})
    rows = _open(hub_images, image_split, ["image_id", "objects"])
    mapping = _hub_category_map(rows.features, hub_images)
    categories: dict[str, tuple[int, ...]] = {}
    for row in rows:
        present = row["objects"]["category"] if row["objects"] else []
        key = str(row["image_id"])
        if present:
            categories[key] = tuple(sorted({mapping[int(c)] for c in present}))
        else:
            pool.excluded["no_objects"] = pool.excluded.get("no_objects", 0) + 1
    captions: dict[str, list[str]] = {}
    if need_captions:
        for row in _open(hub_captions, HUB_CAPTION_SPLITS[split], ["image_id", "captions"]):
            key = str(row["image_id"])
            texts = []
            for text in row["captions"] or []:
                if isinstance(text, str) and text.strip():
                    texts.append(_normalise(text))
                else:
                    pool.skips.add("empty_caption", key)
            if texts:
                captions[key] = texts
        # COCO images without instances are in the caption copy only: not eligible, not bad.
        pool.excluded["no_objects"] = pool.excluded.get("no_objects", 0) + len(set(captions) - set(categories))
        missing = _numeric_sort(set(categories) - set(captions))
        if categories and len(missing) > (1 - MIN_JOIN_SHARE) * len(categories):
            raise RuntimeError(
                f"joining {hub_images!r} ({image_split}) with {hub_captions!r} ({HUB_CAPTION_SPLITS[split]}) on "
                f"image_id: only {len(categories) - len(missing)} of {len(categories)} images have captions "
                f"(e.g. missing {missing[:3]}). The two copies do not share COCO image ids; pass matching "
                f"hub_images/hub_captions, or use the original release via {ENV_VAR}."
            )
        for key in missing:
            pool.skips.add("absent_from_captions", key)
    pool.ids = _numeric_sort(k for k in categories if not need_captions or k in captions)
    pool.categories = {k: categories[k] for k in pool.ids}
    pool.captions = {k: captions[k] for k in pool.ids} if need_captions else {}
    folder = image_cache_dir(hub_images, source_split)

    def fetch(ids: list[str]) -> dict[str, Fetched]:
        wanted = {int(k) for k in ids}
        out: dict[str, Fetched] = {}
        selected = _open(hub_images, image_split, ["image_id", "image"], filters=[("image_id", "in", sorted(wanted))])
        for row in selected:
            key = str(row["image_id"])
            if key in out:
                continue
            data = (row["image"] or {}).get("bytes")
            out[key] = store_image_bytes(data, folder, f"{key}.img") if data else CORRUPT_IMAGE
            if len(out) == len(wanted):
                break  # stop streaming as soon as every selected image is in hand
        return out

    pool.fetch = fetch
    return pool


def _pools(
    source: str, coco_dir: str | None, hub_images: str, hub_captions: str, need_captions: bool
) -> tuple[dict[str, CocoPool], dict[str, Any]]:
    root = resolve_source(source, ENV_VAR, coco_dir, "coco_dir")
    if root is not None:
        pools = {split: _local_pool(root, split, need_captions) for split in SPLITS}
        origin: dict[str, Any] = {"kind": "local", "coco_dir": str(root)}
    else:
        pools = {split: _hub_pool(split, hub_images, hub_captions, need_captions) for split in SPLITS}
        origin = {"kind": "hub", "images": hub_images, **({"captions": hub_captions} if need_captions else {})}
    if pools["train"].names != pools["test"].names:
        raise ValueError(
            f"train2017 and val2017 annotation files list different categories "
            f"({len(pools['train'].names)} vs {len(pools['test'].names)}); use the files of one COCO 2017 release"
        )
    if pools["train"].names != CATEGORY_NAMES:
        logger.warning(
            f"COCO annotations list {len(pools['train'].names)} categories that differ from COCO 2017's 80; "
            "using them as given"
        )
    overlap = set(pools["train"].ids) & set(pools["test"].ids)
    if overlap:
        raise RuntimeError(
            f"{len(overlap)} image ids are in both the train and the val split (e.g. {sorted(overlap)[:3]}); "
            "probe-train and probe-test must not share images: check the annotation files"
        )
    return pools, origin


def _walk(pool: CocoPool, seed: int, n: int, yield_of: Callable[[str], int]) -> tuple[list[str], dict[str, ImageValue]]:
    """Choose images in a seeded order until they give ``n`` documents, opening only those."""
    rng = seeded_rng(seed, _SALT["order"], pool.split)
    usable = [pool.ids[i] for i in rng.permutation(len(pool.ids)) if yield_of(pool.ids[i]) > 0]
    return select_in_order(usable, n, yield_of, pool.fetch, pool.skips)


def _caption_docs(pool: CocoPool, k: int, key: str) -> int:
    """Documents an image gives in the entailment task: k (or fewer) positives and as many negatives."""
    return 2 * min(k, len(pool.captions[key]))


def _object_docs(pool: CocoPool, k: int, key: str) -> int:
    """Documents an image gives in the objects task: as many present as absent categories, at most k each."""
    present = len(pool.categories[key])
    return 2 * min(k, present, len(pool.names) - present)


def _one_doc(key: str) -> int:
    return 1


def _split_report(
    pool: CocoPool, requested: int, docs: list[dict], label_key: str, names: Sequence[str]
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "source_split": pool.source_split,
        "requested": requested,
        "used": len(docs),
        "images": len({d["image_id"] for d in docs}),
        "eligible_images": len(pool.ids),
        "skipped": pool.skips.to_dict(),
        "excluded": dict(sorted(pool.excluded.items())),
    }
    if label_key == "labels":
        per_class = counts((c for d in docs for c in d["labels"]), names)
        report["label_counts"] = per_class
        report["mean_labels_per_image"] = float(np.mean([len(d["labels"]) for d in docs])) if docs else 0.0
        report["classes_without_positives"] = [name for name, c in per_class.items() if c == 0]
    else:
        report["label_counts"] = counts((d[label_key] for d in docs), names)
    return report


def _finish(
    task: str,
    seed: int,
    salt: int,
    docs: dict[str, list[dict]],
    features: datasets.Features,
    stratify_by: str | None,
    report: dict[str, Any],
) -> tuple[datasets.Dataset, dict[str, Any]]:
    rows = docs["train"] + docs["test"]
    groups = [(d["probe_split"], d[stratify_by]) if stratify_by else d["probe_split"] for d in rows]
    order = stratified_order(np.random.default_rng([seed, salt, 2]), groups)
    rows = [rows[i] for i in order]
    report["warnings"] = summarize_problems(task, report["splits"])
    columns = {name: [row[name] for row in rows] for name in features}
    return datasets.Dataset.from_dict(columns, features=features), report


def _base_features(extra: dict[str, Any]) -> datasets.Features:
    return datasets.Features(
        {
            "uid": datasets.Value("string"),
            "probe_split": datasets.Value("string"),
            "image": datasets.Image(),
            "image_id": datasets.Value("string"),
            "text": datasets.Value("string"),
            **extra,
        }
    )


# ---------------------------------------------------------------- entailment
def _jaccard(a: Sequence[int], b: Sequence[int]) -> float:
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
    jitter = seeded_rng(seed, _SALT["jitter"], pool.split).random(len(pool.ids)) * 1e-6
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


def coco_entailment_docs(
    n_train: int = 10_000,
    n_test: int = 2_000,
    seed: int = 0,
    captions_per_image: int = 2,
    negatives: str = "hard",
    neighbours: int = 25,
    source: str = "auto",
    coco_dir: str | None = None,
    hub_images: str = HUB_IMAGES,
    hub_captions: str = HUB_CAPTIONS,
) -> tuple[datasets.Dataset, dict[str, Any]]:
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
    pools, origin = _pools(source, coco_dir, hub_images, hub_captions, need_captions=True)
    report: dict[str, Any] = {
        "task": "coco_entailment",
        "source": origin,
        "params": {
            "n_train": n_train,
            "n_test": n_test,
            "seed": seed,
            "captions_per_image": k,
            "negatives": negatives,
            "neighbours": neighbours,
        },
        "splits": {},
    }
    docs: dict[str, list[dict]] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        pool = pools[split]
        if len(pool.ids) < 2:
            raise RuntimeError(
                f"COCO {pool.source_split} has {len(pool.ids)} usable image(s); entailment needs at least 2 "
                "(negatives come from other images): point LMMS_PROBE_COCO_DIR at the full release"
            )
        chosen, images = _walk(pool, seed, n, functools.partial(_caption_docs, pool, k))
        ranked = rank_neighbours(pool, chosen, neighbours, seed) if negatives == "hard" else {}
        rng = seeded_rng(seed, _SALT["ent"], split)
        rows: list[dict] = []
        stats = {"rejected_same_text": 0, "fallback_random": 0}
        for key in chosen:
            own = pool.captions[key]
            m = min(k, len(own))
            positives = [own[i] for i in rng.choice(len(own), size=m, replace=False)]
            picked = _pick_negatives(pool, key, m, ranked.get(key), rng, stats)
            for j in range(m):
                for label, (text, other) in ((1, (positives[j], key)), (0, picked[j])):
                    rows.append(
                        {
                            "uid": f"coco-ent-{split}-{key}-{'p' if label else 'n'}{j}",
                            "probe_split": split,
                            "image": images[key],
                            "image_id": key,
                            "text": text,
                            "label": label,
                            "caption_image_id": other,
                            "similarity": 1.0 if label else _jaccard(pool.categories[key], pool.categories[other]),
                        }
                    )
        rows = rows[:n]  # the last image may give more than needed; pos/neg alternate, so balance holds to within 1
        docs[split] = rows
        rep = _split_report(pool, n, rows, "label", ENTAILMENT_LABELS)
        negs = [r["similarity"] for r in rows if r["label"] == 0]
        rep["negatives"] = {"mean_jaccard": float(np.mean(negs)) if negs else None, **stats}
        report["splits"][split] = rep
    features = _base_features(
        {
            "label": datasets.ClassLabel(names=list(ENTAILMENT_LABELS)),
            "caption_image_id": datasets.Value("string"),
            "similarity": datasets.Value("float32"),
        }
    )
    return _finish("coco_entailment_docs", seed, _SALT["ent"], docs, features, "label", report)


def _pick_negatives(
    pool: CocoPool, key: str, m: int, ranked: list[str] | None, rng: np.random.Generator, stats: dict[str, int]
) -> list[tuple[str, str]]:
    """Pick ``m`` (caption, source image id) negatives for image ``key`` from distinct other images."""
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


# ------------------------------------------------------------------- objects
def coco_object_docs(
    n_train: int = 10_000,
    n_test: int = 2_000,
    seed: int = 0,
    categories_per_image: int = 2,
    negatives: str = "random",
    source: str = "auto",
    coco_dir: str | None = None,
    hub_images: str = HUB_IMAGES,
) -> tuple[datasets.Dataset, dict[str, Any]]:
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
    pools, origin = _pools(source, coco_dir, hub_images, HUB_CAPTIONS, need_captions=False)
    names = pools["train"].names
    n_cat = len(names)
    report: dict[str, Any] = {
        "task": "coco_objects",
        "source": origin,
        "params": {
            "n_train": n_train,
            "n_test": n_test,
            "seed": seed,
            "categories_per_image": k,
            "negatives": negatives,
        },
        "splits": {},
    }
    docs: dict[str, list[dict]] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        pool = pools[split]
        x = pool.multi_hot()
        frequency = x.sum(axis=0).astype(np.float64)
        cooccur = (x.T @ x).astype(np.float64)
        np.fill_diagonal(cooccur, 0.0)
        chosen, images = _walk(pool, seed, n, functools.partial(_object_docs, pool, k))
        rng = seeded_rng(seed, _SALT["obj"], split)
        rows: list[dict] = []
        for key in chosen:
            present = np.array(pool.categories[key])
            absent = np.setdiff1d(np.arange(n_cat), present)
            m = _object_docs(pool, k, key) // 2
            pos = rng.choice(present, size=m, replace=False)
            if negatives == "random":
                weights = np.ones(len(absent))
            elif negatives == "popular":
                weights = frequency[absent]
            else:
                weights = cooccur[present][:, absent].sum(axis=0)
            # A tiny floor keeps every absent category drawable when few have weight.
            weights = weights + 1e-9 * max(float(weights.sum()), 1.0)
            neg = rng.choice(absent, size=m, replace=False, p=weights / weights.sum())
            for j in range(m):
                for label, category in ((1, int(pos[j])), (0, int(neg[j]))):
                    rows.append(
                        {
                            "uid": f"coco-obj-{split}-{key}-{'p' if label else 'n'}{j}",
                            "probe_split": split,
                            "image": images[key],
                            "image_id": key,
                            "text": names[category],
                            "category": category,
                            "label": label,
                        }
                    )
        rows = rows[:n]
        docs[split] = rows
        rep = _split_report(pool, n, rows, "label", OBJECT_LABELS)
        tally = Counter((r["category"], r["label"]) for r in rows)
        rep["category_counts"] = {
            names[c]: {"present": tally[(c, 1)], "absent": tally[(c, 0)]}
            for c in range(n_cat)
            if tally[(c, 1)] or tally[(c, 0)]
        }
        report["splits"][split] = rep
    report["text_only_baseline_acc"] = text_only_baseline(docs["train"], docs["test"])
    features = _base_features(
        {"category": datasets.ClassLabel(names=list(names)), "label": datasets.ClassLabel(names=list(OBJECT_LABELS))}
    )
    return _finish("coco_object_docs", seed, _SALT["obj"], docs, features, "label", report)


def text_only_baseline(train: list[dict], test: list[dict]) -> float | None:
    """Accuracy on probe-test of predicting each category's majority probe-train label (the name-only prior)."""
    if not test:
        return None
    tally: dict[int, list[int]] = {}
    for row in train:
        tally.setdefault(row["category"], [0, 0])[row["label"]] += 1
    overall = int(sum(r["label"] for r in train) * 2 >= len(train)) if train else 1
    hits = 0
    for row in test:
        t = tally.get(row["category"])
        guess = overall if t is None or t[0] == t[1] else int(t[1] > t[0])
        hits += int(guess == row["label"])
    return hits / len(test)


# ---------------------------------------------------------------- multilabel
def coco_multilabel_docs(
    n_train: int = 10_000,
    n_test: int = 2_000,
    seed: int = 0,
    source: str = "auto",
    coco_dir: str | None = None,
    hub_images: str = HUB_IMAGES,
) -> tuple[datasets.Dataset, dict[str, Any]]:
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
    pools, origin = _pools(source, coco_dir, hub_images, HUB_CAPTIONS, need_captions=False)
    names = pools["train"].names
    report: dict[str, Any] = {
        "task": "coco_multilabel",
        "source": origin,
        "params": {"n_train": n_train, "n_test": n_test, "seed": seed},
        "splits": {},
    }
    docs: dict[str, list[dict]] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        pool = pools[split]
        chosen, images = _walk(pool, seed, n, _one_doc)
        docs[split] = [
            {
                "uid": f"coco-ml-{split}-{key}",
                "probe_split": split,
                "image": images[key],
                "image_id": key,
                "text": "",
                "labels": list(pool.categories[key]),
            }
            for key in chosen
        ]
        report["splits"][split] = _split_report(pool, n, docs[split], "labels", names)
    features = _base_features({"labels": datasets.List(datasets.ClassLabel(names=list(names)))})
    return _finish("coco_multilabel_docs", seed, _SALT["ml"], docs, features, None, report)
