"""Build the SNLI-VE probe task (does the image entail, leave open or contradict a hypothesis?).

``snli_ve_docs`` returns a :class:`~lmms_probe_tasks.data.contract.BuiltDocs`: one seeded,
stratified shuffle of probe-train documents (SNLI-VE **train**) and probe-test documents
(SNLI-VE **test**), and the data report. SNLI-VE's official splits are image-disjoint; the
builder also drops (and counts, as ``image_in_train``) any test item whose Flickr30k image
occurs anywhere in the train split, so no image is on both sides whatever copy is used.
The dev split is not used.

Documents
    One per (image, hypothesis) pair: ``text`` = the hypothesis (SNLI ``sentence2``),
    ``label`` = ClassLabel entailment (0) / neutral (1) / contradiction (2), in SNLI-VE's
    order; ``image_id`` = the Flickr30k id. Each split is label-balanced: a third of the
    documents per label (the remainder to the first labels), drawn in a seeded order. If a
    label has fewer usable items than its quota, all are used and the shortfall is
    reported (the other labels keep their quotas).

Sources (``source``: ``auto`` | ``local`` | ``hub``)
    *Local*: the original release in the folder named by ``snli_ve_dir`` or the environment
    variable ``LMMS_PROBE_SNLI_VE_DIR``: ``snli_ve_{train,dev,test}.jsonl`` (fields
    ``Flickr30K_ID``, ``sentence2``, ``gold_label``, ...) and
    ``flickr30k_images/<Flickr30K_ID>.jpg``. ``auto`` uses it whenever the folder is given.

    *Hub* (default otherwise): ``hub_dataset="sedrickkeh/snli-ve"``, parquet with the images
    embedded (``image``, ``filename``, ``premise``, ``hypothesis``, ``label``; splits train /
    validation / test; ~5 GB). It is streamed twice: the text columns only (column
    projection: no image bytes), then the image column of the selected rows only (a parquet
    filter on ``filename``), stopping once every selected image is in hand. Each selected
    image is decoded once and written to ``$HF_DATASETS_CACHE/lmms_probe_tasks/images`` so
    documents hold file paths. Because one image backs many rows spread over the files,
    the image pass may still download much of a split; set ``LMMS_PROBE_SNLI_VE_DIR`` to
    avoid it. ``hub_dataset`` also accepts a local folder of parquet files in that layout.

Skips
    Counted in the report (count + first ids) and named in one warning, never silently
    dropped: ``unknown_label`` (SNLI's ``-`` = no annotator majority, or any label
    outside the three), ``empty_hypothesis``, ``missing_image_id``, ``malformed_line``,
    ``missing_image``, ``corrupt_image``, ``image_in_train``. Image problems are counted per
    candidate row met while sampling (one bad image behind several hypotheses counts each
    row), with examples ``row <n> (image <Flickr30K_ID>)``. A missing folder or jsonl file
    raises with the path and the fix.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import datasets

from lmms_probe_tasks.data.contract import N_TEST, N_TRAIN, BuiltDocs, check_sizes
from lmms_probe_tasks.data.images import (
    MISSING_IMAGE,
    Fetched,
    check_image_files,
    image_cache_dir,
    store_streamed_images,
)
from lmms_probe_tasks.data.reports import (
    SkipLog,
    doc_features,
    doc_row,
    finish_docs,
    label_counts,
    split_head,
    start_report,
)
from lmms_probe_tasks.data.sampling import SPLITS, label_quotas, seeded_rng
from lmms_probe_tasks.data.sources import (
    SourceProblem,
    batch_target,
    one_doc,
    open_stream,
    release_or_hub_problem,
    require_file,
    resolve_source,
    select_in_order,
    with_source_check,
)

#: Label ids 0, 1, 2 in SNLI-VE's (and the hub copy's) order.
LABELS: tuple[str, ...] = ("entailment", "neutral", "contradiction")
ENV_VAR = "LMMS_PROBE_SNLI_VE_DIR"
HUB_DATASET = "sedrickkeh/snli-ve"
#: SNLI-VE split behind each probe split (file snli_ve_<name>.jsonl; hub split <name>).
SOURCE_SPLITS = {"train": "train", "test": "test"}
_SALT = {"pick": 20, "order": 21}


@dataclass(frozen=True)
class Item:
    """One usable SNLI-VE pair.

    Attributes:
        index: Line (local) or row (hub) number in its source split, for the uid.
        image_id: Flickr30k id.
        label: Index into ``LABELS``.
        hypothesis: The statement.
    """

    index: int
    image_id: str
    label: int
    hypothesis: str

    @property
    def key(self) -> str:
        """Row key used while selecting: names the row and its image in skip reports."""
        return f"row {self.index} (image {self.image_id})"


@dataclass
class _Split:
    split: str
    items: list[Item]
    image_ids: set[str]
    skips: SkipLog = field(default_factory=SkipLog)
    #: Hub only: image id -> the ``filename`` value as stored, to filter the image pass on.
    filenames: dict[str, str] = field(default_factory=dict)


def _check_item(
    index: int, image_id: object, label: int | None, raw_label: object, hypothesis: object, split: _Split
) -> None:
    """Add the pair to ``split.items``, or count why it is skipped."""
    image_id = str(image_id or "").strip()
    if not image_id:
        split.skips.add("missing_image_id", f"row {index}")
        return
    split.image_ids.add(image_id)
    if label is None:
        split.skips.add("unknown_label", f"row {index} ({raw_label!r})")
    elif not isinstance(hypothesis, str) or not hypothesis.strip():
        split.skips.add("empty_hypothesis", f"row {index}")
    else:
        split.items.append(Item(index, image_id, label, " ".join(hypothesis.split())))


def _local_split(root: Path, split: str) -> _Split:
    path = require_file(root / f"snli_ve_{SOURCE_SPLITS[split]}.jsonl", "SNLI-VE annotations", ENV_VAR)
    out = _Split(split, [], set())
    index_of = {name: i for i, name in enumerate(LABELS)}
    with open(path, "rb") as f:
        for index, raw in enumerate(f):
            if not raw.strip():
                continue
            try:
                # Decoded per line, so one line of non-UTF-8 bytes is skipped and counted,
                # not a UnicodeDecodeError that ends the whole run.
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                out.skips.add("malformed_line", f"line {index}")
                continue
            gold = record.get("gold_label")
            _check_item(index, record.get("Flickr30K_ID"), index_of.get(gold), gold, record.get("sentence2"), out)
    return out


def _hub_split(hub_dataset: str, split: str) -> _Split:
    rows = open_stream(hub_dataset, SOURCE_SPLITS[split], ["filename", "hypothesis", "label"], ENV_VAR)
    feature = rows.features["label"] if rows.features else None
    names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else list(LABELS)
    remap = {i: LABELS.index(name) for i, name in enumerate(names) if name in LABELS}
    out = _Split(split, [], set())
    for index, row in enumerate(rows):
        raw = row["label"]
        label = remap.get(raw) if isinstance(raw, int) else None
        filename = str(row["filename"] or "")
        image_id = PurePosixPath(filename).stem
        out.filenames.setdefault(image_id, filename)
        _check_item(index, image_id, label, raw, row["hypothesis"], out)
    return out


def _image_id_of(row: Mapping[str, Any]) -> str:
    """Return the Flickr30k id of a hub row: its ``filename`` without the extension."""
    return PurePosixPath(str(row["filename"])).stem


class _Images:
    """Fetches images by Flickr30k id, each at most once, from the local folder or the hub copy."""

    def __init__(
        self, root: Path | None, hub_dataset: str, split: str, image_of: dict[str, str], filenames: dict[str, str]
    ) -> None:
        self.root, self.hub_dataset, self.split = root, hub_dataset, split
        self.image_of, self.filenames = image_of, filenames
        self.cache: dict[str, Fetched] = {}
        if root is not None and not (root / "flickr30k_images").is_dir():
            raise FileNotFoundError(
                f"Flickr30k image folder not found: {root / 'flickr30k_images'}. The folder named by {ENV_VAR} "
                "must hold flickr30k_images/<Flickr30K_ID>.jpg; unpack Flickr30k there or fix the variable."
            )

    def __call__(self, keys: Iterable[str]) -> dict[str, Fetched]:
        """Map row keys (:attr:`Item.key`) to their image's value or skip reason."""
        keys = list(keys)
        needed = sorted({self.image_of[key] for key in keys} - set(self.cache))
        if needed and self.root is not None:
            folder = self.root / "flickr30k_images"
            self.cache.update(check_image_files({i: folder / f"{i}.jpg" for i in needed}))
        elif needed:
            self.cache.update(self._hub(needed))
        return {key: self.cache.get(self.image_of[key], MISSING_IMAGE) for key in keys}

    def _hub(self, ids: list[str]) -> dict[str, Fetched]:
        # Filter on the filename values exactly as the text pass read them.
        filenames = sorted(self.filenames.get(i, f"{i}.jpg") for i in ids)
        rows = open_stream(
            self.hub_dataset,
            SOURCE_SPLITS[self.split],
            ["filename", "image"],
            ENV_VAR,
            filters=[("filename", "in", filenames)],
        )
        folder = image_cache_dir(self.hub_dataset, f"snli_ve_{self.split}")
        return store_streamed_images(rows, _image_id_of, set(ids), folder, ".jpg")


def _load(root: Path | None, hub_dataset: str) -> dict[str, _Split]:
    """Read both splits' usable items; drop (and count) test items whose image is in train."""
    loaded = {split: (_local_split(root, split) if root else _hub_split(hub_dataset, split)) for split in SPLITS}
    # Official splits are image-disjoint; enforce it for any copy.
    train_images = loaded["train"].image_ids
    kept = []
    for item in loaded["test"].items:
        if item.image_id in train_images:
            loaded["test"].skips.add("image_in_train", item.key)
        else:
            kept.append(item)
    loaded["test"].items = kept
    return loaded


def _split_docs(
    part: _Split, root: Path | None, hub_dataset: str, seed: int, n: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Draw one split's label-balanced docs (``n`` or fewer), fetching only their images; return them and the report."""
    split = part.split
    by_key = {item.key: item for item in part.items}
    fetch = _Images(root, hub_dataset, split, {key: item.image_id for key, item in by_key.items()}, part.filenames)
    rng = seeded_rng(seed, _SALT["pick"], split)
    quotas = label_quotas(n, len(LABELS))
    orders = []
    for label in range(len(LABELS)):
        members = [item.key for item in part.items if item.label == label]
        orders.append([members[i] for i in rng.permutation(len(members))])
    # One image pass for all three labels (the hub streams the image column per pass);
    # the walks below then hit the cache unless bad images call for more candidates.
    fetch([key for order, quota in zip(orders, quotas, strict=True) for key in order[: math.ceil(batch_target(quota))]])
    docs: list[dict[str, Any]] = []
    for order, quota in zip(orders, quotas, strict=True):
        chosen, images = select_in_order(order, quota, one_doc, fetch, part.skips)
        for key in chosen:
            item = by_key[key]
            uid = f"snli-ve-{split}-{item.index:07d}"
            docs.append(doc_row(uid, split, images[key], item.image_id, item.hypothesis, label=item.label))
    report = {
        **split_head(SOURCE_SPLITS[split], n, docs),
        "usable_items": len(part.items),
        "label_counts": label_counts((d["label"] for d in docs), LABELS),
        "skipped": part.skips.to_dict(),
    }
    return docs, report


#: Paths a local release folder must hold (the dev split is not used).
RELEASE_LAYOUT: tuple[str, ...] = (
    *(f"snli_ve_{name}.jsonl" for name in SOURCE_SPLITS.values()),
    "flickr30k_images/",
)


def check_source(source: str, snli_ve_dir: str | None, hub_dataset: str, **_: Any) -> SourceProblem | None:
    """Say, without reading any data, whether :func:`snli_ve_docs` with these arguments can read its source.

    Returns:
        None, or what is missing (files of the local release, or the hub copy) and how to provide it.
    """
    hub = {"hub_dataset": hub_dataset}
    return release_or_hub_problem("SNLI-VE", ENV_VAR, "snli_ve_dir", RELEASE_LAYOUT, source, snli_ve_dir, hub)


@with_source_check(check_source)
def snli_ve_docs(
    n_train: int = N_TRAIN,
    n_test: int = N_TEST,
    seed: int = 0,
    source: str = "auto",
    snli_ve_dir: str | None = None,
    hub_dataset: str = HUB_DATASET,
) -> BuiltDocs:
    """Build the SNLI-VE task: label-balanced (image, hypothesis) pairs (see the module docstring).

    Args:
        n_train: Probe-train documents (SNLI-VE train).
        n_test: Probe-test documents (SNLI-VE test).
        seed: Sampling seed.
        source: ``auto``, ``local`` or ``hub``.
        snli_ve_dir: Folder of the original release (default: ``$LMMS_PROBE_SNLI_VE_DIR``).
        hub_dataset: Hub id, or a local folder of parquet files in its layout.

    Returns:
        The documents (columns ``uid``, ``probe_split``, ``image``, ``image_id``, ``text``
        = the hypothesis, ``label`` = ClassLabel entailment/neutral/contradiction) and the
        data report.

    Raises:
        ValueError: An argument is out of range.
        FileNotFoundError: The local folder, a jsonl file or the image folder is missing.
        RuntimeError: The hub copy cannot be loaded.
    """
    n_train, n_test, seed = check_sizes(n_train, n_test, seed)
    root = resolve_source(source, ENV_VAR, snli_ve_dir, "snli_ve_dir")
    origin: dict[str, Any] = (
        {"kind": "local", "snli_ve_dir": str(root)} if root else {"kind": "hub", "dataset": hub_dataset}
    )
    loaded = _load(root, hub_dataset)
    report = start_report("snli_ve", origin, {"n_train": n_train, "n_test": n_test, "seed": seed})
    rows: list[dict[str, Any]] = []
    for split, n in zip(SPLITS, (n_train, n_test), strict=True):
        docs, report["splits"][split] = _split_docs(loaded[split], root, hub_dataset, seed, n)
        rows += docs
    features = doc_features({"label": datasets.ClassLabel(names=list(LABELS))})
    return finish_docs("snli_ve_docs", rows, features, seed, _SALT["order"], "label", report)
