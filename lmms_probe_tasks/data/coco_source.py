"""Read COCO 2017 into one pool of eligible images per probe split, from the local release or the hub join.

Categories
    COCO category ids run 1-90 with ten gaps; they map to 80 contiguous indices by sorted
    id (``COCO_CATEGORIES``): 1 person -> 0, 13 stop sign -> 11, 90 toothbrush -> 79.

Sources (``source``: ``auto`` | ``local`` | ``hub``; release files parsed by :mod:`~.coco_release`)
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

Eligibility and skips
    An image is eligible with at least one instance annotation (and, for a task that
    needs captions, at least one non-empty caption). Bad data is counted in the pool's
    :class:`~lmms_probe_tasks.data.reports.SkipLog`: ``empty_caption``,
    ``absent_from_instances`` (a caption's image id not in the instance file),
    ``absent_from_captions`` (hub: an image without captions),
    ``annotation_of_unknown_image``, ``unknown_category_id``; images that are merely not
    eligible under ``excluded`` (``no_objects``, ``no_captions``). A missing folder or
    annotation file raises with the path and the fix.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from loguru import logger

from lmms_probe_tasks.data.coco_release import normalise, read_captions, read_instances, stamp
from lmms_probe_tasks.data.images import Fetched, check_image_files, image_cache_dir, store_streamed_images
from lmms_probe_tasks.data.reports import SkipLog
from lmms_probe_tasks.data.sampling import SPLITS
from lmms_probe_tasks.data.sources import (
    SourceProblem,
    open_stream,
    release_or_hub_problem,
    require_file,
    resolve_source,
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

ENV_VAR = "LMMS_PROBE_COCO_DIR"
HUB_IMAGES = "detection-datasets/coco"
HUB_CAPTIONS = "phiyodr/coco2017"
#: COCO release split behind each probe split, and its name in each hub copy.
SOURCE_SPLITS = {"train": "train2017", "test": "val2017"}
HUB_IMAGE_SPLITS = {"train": "train", "test": "val"}
HUB_CAPTION_SPLITS = {"train": "train", "test": "validation"}
#: Below this share of images with captions, the two hub copies do not join.
MIN_JOIN_SHARE = 0.5


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
    excluded: Counter[str] = field(default_factory=Counter)

    def multi_hot(self) -> np.ndarray:
        """Return ``[len(ids), n_categories]`` float32 presence indicators, rows in ``ids`` order."""
        x = np.zeros((len(self.ids), len(self.names)), dtype=np.float32)
        for row, key in enumerate(self.ids):
            x[row, list(self.categories[key])] = 1.0
        return x

    def keep(self, eligible: list[str], categories: dict[str, tuple[int, ...]], captions: dict[str, list[str]]) -> None:
        """Set the eligible ids (numerically sorted) and their annotations; no captions when ``captions`` is empty."""
        self.ids = eligible
        self.categories = {k: categories[k] for k in eligible}
        self.captions = {k: captions[k] for k in eligible} if captions else {}


def _numeric_sort(ids: Any) -> list[str]:
    return sorted(ids, key=lambda k: (len(k), k))


# ---------------------------------------------------------------- local release
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
    inst = read_instances(str(instances_path), stamp(instances_path))
    pool = CocoPool(split, source_split, inst.names, [], {}, {}, fetch=lambda ids: {})
    for reason, item in inst.events:
        pool.skips.add(reason, item)
    captions: dict[str, list[str]] = {}
    if need_captions:
        captions_path = require_file(root / "annotations" / f"captions_{source_split}.json", "COCO captions", ENV_VAR)
        captions, events = read_captions(str(captions_path), stamp(captions_path))
        for reason, item in events:
            pool.skips.add(reason, item)
        for key in _numeric_sort(set(captions) - set(inst.files)):
            pool.skips.add("absent_from_instances", key)
    eligible = []
    for key in _numeric_sort(inst.files):
        if key not in inst.categories:
            pool.excluded["no_objects"] += 1
        elif need_captions and not captions.get(key):
            pool.excluded["no_captions"] += 1
        else:
            eligible.append(key)
    pool.keep(eligible, inst.categories, captions if need_captions else {})
    pool.fetch = lambda ids: check_image_files({k: image_dir / inst.files[k] for k in ids})
    return pool


# --------------------------------------------------------------------- hub join
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


def _hub_categories(pool: CocoPool, hub_images: str) -> dict[str, tuple[int, ...]]:
    """Read the instance categories of the split (no image bytes); count images without any."""
    rows = _open(hub_images, HUB_IMAGE_SPLITS[pool.split], ["image_id", "objects"])
    mapping = _hub_category_map(rows.features, hub_images)
    categories: dict[str, tuple[int, ...]] = {}
    for row in rows:
        present = row["objects"]["category"] if row["objects"] else []
        if present:
            categories[str(row["image_id"])] = tuple(sorted({mapping[int(c)] for c in present}))
        else:
            pool.excluded["no_objects"] += 1
    return categories


def _hub_captions(
    pool: CocoPool, hub_images: str, hub_captions: str, categories: dict[str, tuple[int, ...]]
) -> dict[str, list[str]]:
    """Read the split's captions and check that they join the images on ``image_id``.

    Raises:
        RuntimeError: Fewer than ``MIN_JOIN_SHARE`` of the images have captions.
    """
    caption_split = HUB_CAPTION_SPLITS[pool.split]
    captions: dict[str, list[str]] = {}
    for row in _open(hub_captions, caption_split, ["image_id", "captions"]):
        key = str(row["image_id"])
        texts = []
        for text in row["captions"] or []:
            if isinstance(text, str) and text.strip():
                texts.append(normalise(text))
            else:
                pool.skips.add("empty_caption", key)
        if texts:
            captions[key] = texts
    # COCO images without instances are in the caption copy only: not eligible, not bad.
    pool.excluded["no_objects"] += len(set(captions) - set(categories))
    missing = _numeric_sort(set(categories) - set(captions))
    if categories and len(missing) > (1 - MIN_JOIN_SHARE) * len(categories):
        raise RuntimeError(
            f"joining {hub_images!r} ({HUB_IMAGE_SPLITS[pool.split]}) with {hub_captions!r} ({caption_split}) on "
            f"image_id: only {len(categories) - len(missing)} of {len(categories)} images have captions "
            f"(e.g. missing {missing[:3]}). The two copies do not share COCO image ids; pass matching "
            f"hub_images/hub_captions, or use the original release via {ENV_VAR}."
        )
    for key in missing:
        pool.skips.add("absent_from_captions", key)
    return captions


def _hub_fetch(hub_images: str, split: str) -> Callable[[list[str]], dict[str, Fetched]]:
    """Return a fetch that streams only the requested images of the split and caches each as a file."""
    folder = image_cache_dir(hub_images, SOURCE_SPLITS[split])

    def fetch(ids: list[str]) -> dict[str, Fetched]:
        wanted = {int(k) for k in ids}
        filters = [("image_id", "in", sorted(wanted))]
        rows = _open(hub_images, HUB_IMAGE_SPLITS[split], ["image_id", "image"], filters=filters)
        return store_streamed_images(rows, lambda row: str(row["image_id"]), {str(k) for k in wanted}, folder, ".img")

    return fetch


def _hub_pool(split: str, hub_images: str, hub_captions: str, need_captions: bool) -> CocoPool:
    pool = CocoPool(split, SOURCE_SPLITS[split], CATEGORY_NAMES, [], {}, {}, fetch=_hub_fetch(hub_images, split))
    categories = _hub_categories(pool, hub_images)
    captions = _hub_captions(pool, hub_images, hub_captions, categories) if need_captions else {}
    pool.keep(_numeric_sort(k for k in categories if not need_captions or k in captions), categories, captions)
    return pool


# ------------------------------------------------------------------------ pools
def release_layout(need_captions: bool) -> tuple[str, ...]:
    """Return the paths a local release folder must hold (folders end in ``/``); captions only if needed."""
    kinds = ("instances", "captions") if need_captions else ("instances",)
    files = [f"annotations/{kind}_{split}.json" for kind in kinds for split in SOURCE_SPLITS.values()]
    return (*files, *(f"{split}/" for split in SOURCE_SPLITS.values()))


def check_pools(
    source: str, coco_dir: str | None, hub_images: str, hub_captions: str, need_captions: bool
) -> SourceProblem | None:
    """Say, without reading any data, whether :func:`load_pools` with these arguments can read its source.

    Args as :func:`load_pools`.

    Returns:
        None, or what is missing (files of the local release, or the hub copies) and how to provide it.
    """
    hub = {"hub_images": hub_images, **({"hub_captions": hub_captions} if need_captions else {})}
    return release_or_hub_problem(
        "COCO 2017", ENV_VAR, "coco_dir", release_layout(need_captions), source, coco_dir, hub
    )


# Args as the builders' (passed through unchanged), documented here too.
def load_pools(
    source: str, coco_dir: str | None, hub_images: str, hub_captions: str, need_captions: bool
) -> tuple[dict[str, CocoPool], dict[str, Any]]:
    """Read both splits' pools from the chosen source.

    Args:
        source: ``auto``, ``local`` or ``hub``.
        coco_dir: Folder of the original release (default: ``$LMMS_PROBE_COCO_DIR``).
        hub_images: Hub id (or local folder in its layout) of images + instance categories.
        hub_captions: Hub id (or local folder in its layout) of the captions.
        need_captions: Read captions, and make images without any ineligible.

    Returns:
        The pools by probe split, and the report's ``source`` entry.

    Raises:
        ValueError: An unknown source, or the two splits list different categories.
        FileNotFoundError: The local folder or an annotation file is missing.
        RuntimeError: The hub copies cannot be loaded or do not join, or the splits share images.
    """
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
