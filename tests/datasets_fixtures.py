"""Write small COCO and SNLI-VE fixtures in the exact on-disk schemas of the real sources.

* :func:`write_coco` -- the original COCO 2017 release layout: ``annotations/captions_*.json``,
  ``annotations/instances_*.json`` (all 80 real categories with their real ids 1-90 and
  gaps, listed in shuffled order) and generated JPEGs in ``train2017/`` and ``val2017/``.
* :func:`write_coco_hub` -- the two hub copies the COCO builders join:
  ``detection-datasets/coco`` (``data/{train,val}-*.parquet``: ``image_id``, ``image``,
  ``width``, ``height``, ``objects`` {``bbox_id``, ``category`` ClassLabel(80), ``bbox``,
  ``area``}; images without instances left out, as there) and ``phiyodr/coco2017``
  (``data/{train,validation}-*.parquet`` + README ``dataset_info``: ``license``,
  ``file_name``, ``coco_url``, ``height``, ``width``, ``date_captured``, ``flickr_url``,
  ``image_id``, ``ids``, ``captions``).
* :func:`write_snli_ve` -- the original SNLI-VE release: ``snli_ve_{train,dev,test}.jsonl``
  and ``flickr30k_images/<id>.jpg``.
* :func:`write_snli_ve_hub` -- ``sedrickkeh/snli-ve``: README with ``configs`` and
  ``dataset_info``, ``data/{train,validation,test}-*.parquet`` with ``image`` (embedded),
  ``filename``, ``premise``, ``hypothesis``, ``label`` ClassLabel(entailment, neutral,
  contradiction).

Everything is generated from a seed: same arguments, same bytes.
"""

from __future__ import annotations

import io
import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from lmms_probe_tasks.data.coco_source import CATEGORY_NAMES, COCO_CATEGORIES

#: Scene themes: images of one theme share categories, so hard negatives have something to find.
THEMES: dict[str, tuple[str, ...]] = {
    "street": ("person", "car", "bus", "truck", "traffic light", "bicycle", "stop sign"),
    "kitchen": ("cup", "fork", "knife", "bowl", "dining table", "oven", "sink"),
    "animals": ("dog", "cat", "horse", "sheep", "cow", "bird"),
    "sports": ("person", "tennis racket", "sports ball", "frisbee", "kite", "skateboard"),
    "bathroom": ("toilet", "sink", "toothbrush", "hair drier"),
}
SUPERCATEGORY = "thing"  # the fixture does not use supercategories
CATEGORY_ID = {name: cid for cid, name in COCO_CATEGORIES}


def jpeg_bytes(seed: int, size: int = 16) -> bytes:
    """A small, valid, seeded RGB JPEG."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def corrupt_bytes(seed: int) -> bytes:
    """A JPEG cut short: opens as a JPEG, fails to decode."""
    return jpeg_bytes(seed)[:120]


# ----------------------------------------------------------------------- COCO
@dataclass
class CocoFixture:
    """What :func:`write_coco` wrote.

    Attributes:
        root: The release folder (what ``LMMS_PROBE_COCO_DIR`` names).
        images: COCO split ("train2017"/"val2017") -> image ids (str) listed in the
            instance file.
        categories: Image id -> sorted category names present (absent key: no instances).
        captions: Image id -> its captions as written (may include blank ones).
        corrupt: Ids whose JPEG is truncated.
        missing: Ids whose JPEG file is absent.
        blank_captions: Ids with one whitespace-only caption.
        orphan_captions: Caption image ids absent from the instance file.
        no_objects: Ids without any instance annotation.
    """

    root: Path
    images: dict[str, list[str]] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)
    captions: dict[str, list[str]] = field(default_factory=dict)
    corrupt: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    blank_captions: list[str] = field(default_factory=list)
    orphan_captions: list[str] = field(default_factory=list)
    no_objects: list[str] = field(default_factory=list)


def write_coco(
    root: Path,
    n_train: int = 30,
    n_val: int = 15,
    *,
    corrupt: int = 0,
    missing: int = 0,
    blank_captions: int = 0,
    orphan_captions: int = 0,
    no_objects: int = 1,
    seed: int = 0,
) -> CocoFixture:
    """Write a COCO 2017 release folder with ``n_train`` + ``n_val`` annotated images.

    Args:
        root: Folder to create.
        n_train: Images in train2017 (ids 100000 + i).
        n_val: Images in val2017 (ids 500000 + i).
        corrupt: Train images (the first ones) whose JPEG is truncated.
        missing: Train images (after the corrupt ones) whose JPEG file is not written.
        blank_captions: Train images with an extra whitespace-only caption.
        orphan_captions: Caption entries (train) whose image id is not in the instance file.
        no_objects: Extra images per split with captions but no instance annotation.
        seed: Seed of everything random.
    """
    rng = np.random.default_rng(seed)
    fx = CocoFixture(root=root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    themes = list(THEMES)
    for split, n, base in (("train2017", n_train, 100_000), ("val2017", n_val, 500_000)):
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        images, annotations, captions = [], [], []
        ids = [str(base + 7 * i) for i in range(n + no_objects)]
        fx.images[split] = ids
        for i, key in enumerate(ids):
            file_name = f"{int(key):012d}.jpg"
            images.append(
                {
                    "license": 1,
                    "file_name": file_name,
                    "coco_url": f"http://images.cocodataset.org/{split}/{file_name}",
                    "height": 16,
                    "width": 16,
                    "date_captured": "2013-11-14 11:18:45",
                    "flickr_url": "",
                    "id": int(key),
                }
            )
            theme = themes[i % len(themes)]
            if i >= n:  # the no-objects extras
                names: list[str] = []
                fx.no_objects.append(key)
            else:
                pick = rng.choice(len(THEMES[theme]), size=int(rng.integers(1, 4)), replace=False)
                names = sorted({THEMES[theme][j] for j in pick}, key=CATEGORY_NAMES.index)
                fx.categories[key] = names
            for name in names:
                for _ in range(int(rng.integers(1, 3))):  # several instances of one category
                    annotations.append(
                        {
                            "segmentation": [[0.0, 0.0, 4.0, 0.0, 4.0, 4.0]],
                            "area": 8.0,
                            "iscrowd": 0,
                            "image_id": int(key),
                            "bbox": [0.0, 0.0, 4.0, 4.0],
                            "category_id": CATEGORY_ID[name],
                            "id": len(annotations) + base,
                        }
                    )
            texts = [
                f"A {theme} scene number {key} showing {', '.join(names) or 'nothing'}, caption {j}." for j in range(5)
            ]
            fx.captions[key] = list(texts)
            for text in texts:
                captions.append({"image_id": int(key), "id": base + len(captions), "caption": text + "\n"})
            data = jpeg_bytes(int(key))
            if split == "train2017" and i < corrupt:
                data = corrupt_bytes(int(key))
                fx.corrupt.append(key)
            if split == "train2017" and corrupt <= i < corrupt + missing:
                fx.missing.append(key)
                continue
            (folder / file_name).write_bytes(data)
        if split == "train2017":
            for key in ids[corrupt + missing : corrupt + missing + blank_captions]:
                captions.append({"image_id": int(key), "id": base + len(captions), "caption": "   "})
                fx.captions[key].append("   ")
                fx.blank_captions.append(key)
            for j in range(orphan_captions):
                orphan = str(base + 999_000 + j)
                captions.append({"image_id": int(orphan), "id": base + len(captions), "caption": "An orphan caption."})
                fx.orphan_captions.append(orphan)
        categories = [{"supercategory": SUPERCATEGORY, "id": cid, "name": name} for cid, name in COCO_CATEGORIES]
        order = rng.permutation(len(categories))  # the file need not list categories by id
        info = {"description": "fixture", "version": "1.0", "year": 2017}
        licenses = [{"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "id": 1, "name": "x"}]
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps(
                {
                    "info": info,
                    "licenses": licenses,
                    "images": images,
                    "annotations": annotations,
                    "categories": [categories[j] for j in order],
                }
            )
        )
        (root / "annotations" / f"captions_{split}.json").write_text(
            json.dumps({"info": info, "licenses": licenses, "images": images, "annotations": captions})
        )
    return fx


_DETECTION_FEATURES = datasets.Features(
    {
        "image_id": datasets.Value("int64"),
        "image": datasets.Image(),
        "width": datasets.Value("int64"),
        "height": datasets.Value("int64"),
        "objects": datasets.Sequence(
            {
                "bbox_id": datasets.Value("int64"),
                "category": datasets.ClassLabel(names=list(CATEGORY_NAMES)),
                "bbox": datasets.Sequence(datasets.Value("float64"), length=4),
                "area": datasets.Value("int64"),
            }
        ),
    }
)
_CAPTION_FEATURES = datasets.Features(
    {
        "license": datasets.Value("int64"),
        "file_name": datasets.Value("string"),
        "coco_url": datasets.Value("string"),
        "height": datasets.Value("int64"),
        "width": datasets.Value("int64"),
        "date_captured": datasets.Value("string"),
        "flickr_url": datasets.Value("string"),
        "image_id": datasets.Value("int64"),
        "ids": datasets.Sequence(datasets.Value("int64")),
        "captions": datasets.Sequence(datasets.Value("string")),
    }
)
_CAPTIONS_README = """\
---
language:
- en
pretty_name: COCO2017
dataset_info:
  features:
  - name: license
    dtype: int64
  - name: file_name
    dtype: string
  - name: coco_url
    dtype: string
  - name: height
    dtype: int64
  - name: width
    dtype: int64
  - name: date_captured
    dtype: string
  - name: flickr_url
    dtype: string
  - name: image_id
    dtype: int64
  - name: ids
    sequence: int64
  - name: captions
    sequence: string
---
# coco2017 (fixture in the hub copy's layout)
"""


def write_coco_hub(root: Path, fx: CocoFixture) -> tuple[Path, Path]:
    """Write the two hub copies of ``fx`` (see the module docstring); return (images, captions) folders."""
    images_dir, captions_dir = root / "detection-datasets--coco", root / "phiyodr--coco2017"
    (images_dir / "data").mkdir(parents=True, exist_ok=True)
    (captions_dir / "data").mkdir(parents=True, exist_ok=True)
    (captions_dir / "README.md").write_text(_CAPTIONS_README)
    for split, image_split, caption_split in (("train2017", "train", "train"), ("val2017", "val", "validation")):
        rows = {name: [] for name in _DETECTION_FEATURES}
        for key in fx.images[split]:
            if key not in fx.categories:
                continue  # the detection copy leaves out images without instances
            path = fx.root / split / f"{int(key):012d}.jpg"
            if not path.is_file():
                continue  # a missing file has no bytes to embed
            names = fx.categories[key]
            rows["image_id"].append(int(key))
            rows["image"].append({"bytes": path.read_bytes(), "path": None})
            rows["width"].append(16)
            rows["height"].append(16)
            rows["objects"].append(
                {
                    "bbox_id": list(range(len(names))),
                    "category": [CATEGORY_NAMES.index(n) for n in names],
                    "bbox": [[0.0, 0.0, 4.0, 4.0]] * len(names),
                    "area": [16] * len(names),
                }
            )
        datasets.Dataset.from_dict(rows, features=_DETECTION_FEATURES).to_parquet(
            str(images_dir / "data" / f"{image_split}-00000-of-00001-0a1b2c3d4e5f6a7b.parquet")
        )
        caps = {name: [] for name in _CAPTION_FEATURES}
        for key in fx.images[split]:
            file_name = f"{int(key):012d}.jpg"
            for name, value in (
                ("license", 1),
                ("file_name", file_name),
                ("coco_url", f"http://images.cocodataset.org/{split}/{file_name}"),
                ("height", 16),
                ("width", 16),
                ("date_captured", "2013-11-14 11:18:45"),
                ("flickr_url", ""),
                ("image_id", int(key)),
                ("ids", list(range(len(fx.captions[key])))),
                ("captions", [c + "\n" for c in fx.captions[key]]),
            ):
                caps[name].append(value)
        datasets.Dataset.from_dict(caps, features=_CAPTION_FEATURES).to_parquet(
            str(captions_dir / "data" / f"{caption_split}-00000-of-00001-0123456789abcdef.parquet")
        )
    return images_dir, captions_dir


# -------------------------------------------------------------------- SNLI-VE
SNLI_LABELS = ("entailment", "neutral", "contradiction")


@dataclass
class SnliFixture:
    """What :func:`write_snli_ve` wrote.

    Attributes:
        root: The release folder (what ``LMMS_PROBE_SNLI_VE_DIR`` names).
        records: Split ("train"/"dev"/"test") -> the jsonl records, in file order.
        corrupt: Image ids whose JPEG is truncated.
        missing: Image ids whose JPEG file is absent.
    """

    root: Path
    records: dict[str, list[dict]] = field(default_factory=dict)
    corrupt: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def write_snli_ve(
    root: Path,
    images: dict[str, int] | None = None,
    per_label: int = 2,
    *,
    dash_labels: int = 1,
    blank_hypotheses: int = 1,
    corrupt: int = 0,
    missing: int = 0,
    shared_test_image: bool = False,
) -> SnliFixture:
    """Write an SNLI-VE release folder.

    Args:
        root: Folder to create.
        images: Images per split (default train 8, dev 2, test 4); ids are disjoint across splits.
        per_label: Hypotheses per image and label.
        dash_labels: Train records (extra) with gold label "-" (no annotator majority).
        blank_hypotheses: Train records (extra) with an empty ``sentence2``.
        corrupt: Train images (the first ones) whose JPEG is truncated.
        missing: Train images (after the corrupt ones) whose JPEG file is absent.
        shared_test_image: Give the first test image's id to the first train image too
            (breaking SNLI-VE's image-disjointness, to test the guard).
    """
    images = images or {"train": 8, "dev": 2, "test": 4}
    fx = SnliFixture(root=root)
    folder = root / "flickr30k_images"
    folder.mkdir(parents=True, exist_ok=True)
    base = {"train": 1_000_000, "dev": 2_000_000, "test": 3_000_000}
    for split, n in images.items():
        records = []
        ids = [str(base[split] + 11 * i) for i in range(n)]
        if shared_test_image and split == "test":
            ids[0] = fx.records["train"][0]["Flickr30K_ID"]
        for i, image_id in enumerate(ids):
            premise = f"A photo {image_id} of people outdoors."
            for label in SNLI_LABELS:
                for j in range(per_label):
                    records.append(
                        _snli_record(
                            image_id, premise, f"Hypothesis {label} {j} about {image_id}.", label, len(records)
                        )
                    )
            if split == "train" and i < dash_labels:
                records.append(_snli_record(image_id, premise, "Nobody agreed on this one.", "-", len(records)))
            if split == "train" and i < blank_hypotheses:
                records.append(_snli_record(image_id, premise, "  ", "neutral", len(records)))
            path = folder / f"{image_id}.jpg"
            if split == "train" and i < corrupt:
                path.write_bytes(corrupt_bytes(int(image_id)))
                fx.corrupt.append(image_id)
            elif split == "train" and corrupt <= i < corrupt + missing:
                fx.missing.append(image_id)
            elif not path.exists():
                path.write_bytes(jpeg_bytes(int(image_id)))
        fx.records[split] = records
        with open(root / f"snli_ve_{split}.jsonl", "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
    return fx


def _snli_record(image_id: str, premise: str, hypothesis: str, gold: str, n: int) -> dict:
    return {
        "Flickr30K_ID": image_id,
        "annotator_labels": [gold if gold != "-" else "neutral"],
        "captionID": f"{image_id}.jpg#0",
        "gold_label": gold,
        "pairID": f"{image_id}.jpg#0r{n}",
        "sentence1": premise,
        "sentence1_binary_parse": "",
        "sentence1_parse": "",
        "sentence2": hypothesis,
        "sentence2_binary_parse": "",
        "sentence2_parse": "",
    }


_SNLI_README = textwrap.dedent(
    """\
    ---
    dataset_info:
      features:
      - name: image
        dtype: image
      - name: filename
        dtype: string
      - name: premise
        dtype: string
      - name: hypothesis
        dtype: string
      - name: label
        dtype:
          class_label:
            names:
              '0': entailment
              '1': neutral
              '2': contradiction
    configs:
    - config_name: default
      data_files:
      - split: train
        path: data/train-*
      - split: validation
        path: data/validation-*
      - split: test
        path: data/test-*
    ---
    """
)
_SNLI_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "filename": datasets.Value("string"),
        "premise": datasets.Value("string"),
        "hypothesis": datasets.Value("string"),
        "label": datasets.ClassLabel(names=list(SNLI_LABELS)),
    }
)


def write_snli_ve_hub(root: Path, fx: SnliFixture) -> Path:
    """Write ``fx`` in the ``sedrickkeh/snli-ve`` layout; rows with label "-" get label -1 (no label)."""
    out = root / "sedrickkeh--snli-ve"
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text(_SNLI_README)
    for split, hub_split in (("train", "train"), ("dev", "validation"), ("test", "test")):
        rows = {name: [] for name in _SNLI_FEATURES}
        for record in fx.records[split]:
            path = fx.root / "flickr30k_images" / f"{record['Flickr30K_ID']}.jpg"
            if not path.is_file():
                continue  # nothing to embed
            rows["image"].append({"bytes": path.read_bytes(), "path": None})
            rows["filename"].append(f"{record['Flickr30K_ID']}.jpg")
            rows["premise"].append(record["sentence1"])
            rows["hypothesis"].append(record["sentence2"])
            rows["label"].append(SNLI_LABELS.index(record["gold_label"]) if record["gold_label"] in SNLI_LABELS else -1)
        datasets.Dataset.from_dict(rows, features=_SNLI_FEATURES).to_parquet(
            str(out / "data" / f"{hub_split}-00000-of-00001.parquet")
        )
    return out
