"""Tests of the COCO probe sources (entailment, objects, multi-label) on fixtures in the real schemas."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from loguru import logger

from lmms_probe_tasks.data import coco as C
from lmms_probe_tasks.data import coco_negatives, coco_release, coco_source
from lmms_probe_tasks.data import images as img
from lmms_probe_tasks.data.contract import BuiltDocs, check_docs
from tests.datasets_fixtures import CocoFixture, write_coco, write_coco_hub, write_snli_ve

ROOT = Path(__file__).resolve().parents[1]
BUILDERS = {
    "entailment": C.coco_entailment_docs,
    "objects": C.coco_object_docs,
    "multilabel": C.coco_multilabel_docs,
}


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> CocoFixture:
    """A release with bad data: a truncated JPEG, a missing file, a blank caption, an orphan caption."""
    return write_coco(
        tmp_path_factory.mktemp("coco") / "coco",
        n_train=40,
        n_val=20,
        corrupt=1,
        missing=1,
        blank_captions=1,
        orphan_captions=1,
    )


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[CocoFixture, Path, Path]:
    """A clean release and its two hub copies."""
    base = tmp_path_factory.mktemp("clean")
    fixture = write_coco(base / "coco", n_train=24, n_val=12)
    images, captions = write_coco_hub(base / "hub", fixture)
    return fixture, images, captions


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv(C.ENV_VAR, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture
def warnings_seen():
    seen: list[str] = []
    handle = logger.add(lambda m: seen.append(m.record["message"]), level="WARNING")
    yield seen
    logger.remove(handle)


def _split_of(fx: CocoFixture, image_id: str) -> str:
    return "train" if image_id in fx.images["train2017"] else "test" if image_id in fx.images["val2017"] else "?"


def _norm(text: str) -> str:
    return " ".join(text.split()).lower().rstrip(" .")


# ------------------------------------------------------------------ categories
def test_category_ids_map_to_80_contiguous_names_by_sorted_id():
    ids = [cid for cid, _ in C.COCO_CATEGORIES]
    assert len(ids) == 80 and ids == sorted(ids) and ids[0] == 1 and ids[-1] == 90
    assert set(range(1, 91)) - set(ids) == {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
    assert C.CATEGORY_NAMES.index("person") == 0
    assert C.CATEGORY_NAMES.index("stop sign") == 11  # id 13, after the gap at 12
    assert C.CATEGORY_NAMES.index("backpack") == 24  # id 27
    assert C.CATEGORY_NAMES.index("toothbrush") == 79  # id 90


def test_annotation_file_categories_are_sorted_by_id(fx):
    # The fixture lists the 80 categories in shuffled order; the mapping must not care.
    path = fx.root / "annotations" / "instances_train2017.json"
    parsed = coco_release.read_instances(str(path), coco_release.stamp(path))
    assert parsed.names == C.CATEGORY_NAMES
    for key, names in fx.categories.items():
        if key in parsed.categories:
            assert [C.CATEGORY_NAMES[i] for i in parsed.categories[key]] == names


def test_multilabel_targets_are_the_annotated_categories(fx):
    ds = C.coco_multilabel_docs(n_train=30, n_test=15, coco_dir=str(fx.root)).docs
    feature = ds.features["labels"].feature
    assert isinstance(feature, datasets.ClassLabel) and tuple(feature.names) == C.CATEGORY_NAMES
    for row in ds.remove_columns("image"):
        assert row["text"] == ""
        assert [C.CATEGORY_NAMES[i] for i in row["labels"]] == fx.categories[row["image_id"]]


def test_hub_categories_map_by_name():
    shuffled = list(reversed(C.CATEGORY_NAMES))
    features = datasets.Features({"objects": {"category": datasets.List(datasets.ClassLabel(names=shuffled))}})
    mapping = coco_source._hub_category_map(features, "x")
    assert all(C.CATEGORY_NAMES[mapping[i]] == name for i, name in enumerate(shuffled))
    bad = datasets.Features({"objects": {"category": datasets.List(datasets.ClassLabel(names=["person", "unicorn"]))}})
    with pytest.raises(ValueError, match="unicorn"):
        coco_source._hub_category_map(bad, "x")


# ------------------------------------------------------------ sizes, balance
@pytest.mark.parametrize("task", list(BUILDERS))
@pytest.mark.parametrize(("n_train", "n_test"), [(12, 6), (7, 5), (1, 1)])
def test_exact_counts_balance_and_disjoint_images(fx, task, n_train, n_test):
    built = BUILDERS[task](n_train=n_train, n_test=n_test, coco_dir=str(fx.root))
    ds, report = built.docs, built.report
    assert len(ds) == n_train + n_test
    assert Counter(ds["probe_split"]) == {"train": n_train, "test": n_test}
    assert len(set(ds["uid"])) == len(ds)
    sides = {"train": set(), "test": set()}
    for split, image_id in zip(ds["probe_split"], ds["image_id"], strict=True):
        assert _split_of(fx, image_id) == split  # train2017 -> probe-train, val2017 -> probe-test
        sides[split].add(image_id)
    assert not sides["train"] & sides["test"]
    if task != "multilabel":
        for split in ("train", "test"):
            labels = [lab for s, lab in zip(ds["probe_split"], ds["label"], strict=True) if s == split]
            assert abs(labels.count(0) - labels.count(1)) <= 1
            assert report["splits"][split]["label_counts"] == dict(
                zip(ds.features["label"].names, (labels.count(0), labels.count(1)), strict=True)
            )
    assert report["splits"]["train"]["used"] == n_train and report["splits"]["test"]["requested"] == n_test


@pytest.mark.parametrize("task", list(BUILDERS))
def test_builders_return_the_contract(fx, task):
    built = BUILDERS[task](n_train=4, n_test=2, coco_dir=str(fx.root))
    assert isinstance(built, BuiltDocs)
    check_docs(task, built.docs, "labels" if task == "multilabel" else "label")
    json.dumps(built.report)  # plain data: it goes into the artifact JSON


def test_prefixes_mix_splits_and_labels(fx):
    ds = C.coco_entailment_docs(n_train=40, n_test=20, coco_dir=str(fx.root)).docs
    head = ds.select(range(12))
    assert set(head["probe_split"]) == {"train", "test"} and set(head["label"]) == {0, 1}


def test_same_seed_same_docs_other_seed_other_docs(fx):
    def key(ds):
        return list(zip(ds["uid"], ds["text"], ds["label"], strict=True))

    a = C.coco_entailment_docs(n_train=16, n_test=8, seed=3, coco_dir=str(fx.root)).docs
    b = C.coco_entailment_docs(n_train=16, n_test=8, seed=3, coco_dir=str(fx.root)).docs
    c = C.coco_entailment_docs(n_train=16, n_test=8, seed=4, coco_dir=str(fx.root)).docs
    assert key(a) == key(b) and key(a) != key(c)
    o1 = C.coco_object_docs(n_train=16, n_test=8, seed=3, coco_dir=str(fx.root)).docs
    o2 = C.coco_object_docs(n_train=16, n_test=8, seed=3, coco_dir=str(fx.root)).docs
    assert key(o1) == key(o2)


# ----------------------------------------------------------------- entailment
@pytest.mark.parametrize("negatives", ["hard", "random"])
def test_negative_caption_never_belongs_to_the_image(fx, negatives):
    built = C.coco_entailment_docs(n_train=60, n_test=30, negatives=negatives, neighbours=3, coco_dir=str(fx.root))
    ds, report = built.docs, built.report
    assert tuple(ds.features["label"].names) == C.ENTAILMENT_LABELS
    for row in ds.remove_columns("image"):
        own = {_norm(t) for t in fx.captions[row["image_id"]]}
        source = {_norm(t) for t in fx.captions[row["caption_image_id"]]}
        assert _norm(row["text"]) in source  # a real caption of the image it names
        if row["label"] == 1:
            assert row["caption_image_id"] == row["image_id"] and row["similarity"] == 1.0
        else:
            assert row["caption_image_id"] != row["image_id"]
            assert _norm(row["text"]) not in own
            assert _split_of(fx, row["caption_image_id"]) == row["probe_split"]  # same COCO split
            a, b = set(fx.categories[row["image_id"]]), set(fx.categories[row["caption_image_id"]])
            assert row["similarity"] == pytest.approx(len(a & b) / len(a | b))
    assert report["params"]["negatives"] == negatives


def test_hard_negatives_come_from_more_similar_images_than_random(fx):
    means = {}
    for negatives in ("hard", "random"):
        report = C.coco_entailment_docs(
            n_train=60, n_test=30, negatives=negatives, neighbours=3, coco_dir=str(fx.root)
        ).report
        means[negatives] = report["splits"]["train"]["negatives"]["mean_jaccard"]
    assert means["hard"] > means["random"] + 0.1


def test_rank_neighbours_orders_by_jaccard_and_skips_self():
    cats = {"1": (0, 1), "2": (0, 1), "3": (0,), "4": (5, 6), "5": (0, 1, 2)}
    pool = C.CocoPool("train", "train2017", C.CATEGORY_NAMES, sorted(cats), cats, {}, fetch=lambda ids: {})
    ranked = C.rank_neighbours(pool, ["1", "4"], m=3, seed=0)
    assert ranked["1"][0] == "2"  # identical sets first
    assert set(ranked["1"]) == {"2", "3", "5"} and "1" not in ranked["1"]
    assert "4" not in ranked["4"] and len(ranked["4"]) == 3


def test_a_caption_equal_to_an_own_caption_is_rejected():
    caps = {"1": ["A dog on a couch."], "2": ["a dog on a couch"], "3": ["A cat."]}
    cats = {"1": (16,), "2": (16,), "3": (15,)}
    pool = C.CocoPool("train", "train2017", C.CATEGORY_NAMES, ["1", "2", "3"], cats, caps, fetch=lambda ids: {})
    stats = {"rejected_same_text": 0, "fallback_random": 0}
    picked = coco_negatives.pick_negatives(pool, "1", 1, ["2"], np.random.default_rng(0), stats)
    assert picked == [("A cat.", "3")] and stats == {"rejected_same_text": 1, "fallback_random": 1}


# -------------------------------------------------------------------- objects
@pytest.mark.parametrize("negatives", C.NEGATIVE_CATEGORIES)
def test_object_docs_name_present_and_absent_categories(fx, negatives):
    built = C.coco_object_docs(n_train=50, n_test=20, negatives=negatives, coco_dir=str(fx.root))
    ds, report = built.docs, built.report
    assert tuple(ds.features["label"].names) == C.OBJECT_LABELS
    for row in ds.remove_columns("image"):
        name = C.CATEGORY_NAMES[row["category"]]
        assert row["text"] == name
        assert (name in fx.categories[row["image_id"]]) == (row["label"] == 1)
    assert 0.0 <= report["text_only_baseline_acc"] <= 1.0
    assert sum(v["present"] + v["absent"] for v in report["splits"]["test"]["category_counts"].values()) == 20


def test_cooccur_negatives_favour_categories_seen_with_present_ones(fx):
    # In the fixture, categories co-occur only within a theme: cooccur negatives stay in the
    # themes of the present categories (unless too few absent ones are left there).
    from tests.datasets_fixtures import THEMES

    def in_theme_share(negatives):
        ds = C.coco_object_docs(n_train=60, n_test=20, negatives=negatives, coco_dir=str(fx.root)).docs
        hits = total = 0
        for row in ds.remove_columns("image"):
            if row["label"] == 0:
                present = set(fx.categories[row["image_id"]])
                related = {c for t in THEMES.values() if present & set(t) for c in t}
                hits += row["text"] in related
                total += 1
        return hits / total

    shares = {mode: in_theme_share(mode) for mode in ("cooccur", "random")}
    assert shares["cooccur"] > 0.8 and shares["random"] < 0.3, shares


# -------------------------------------------------------------- bad data, sizes
def test_bad_items_are_skipped_counted_and_warned_once(fx, warnings_seen):
    built = C.coco_multilabel_docs(n_train=100, n_test=100, coco_dir=str(fx.root))
    ds, report = built.docs, built.report
    skipped = report["splits"]["train"]["skipped"]
    assert skipped["corrupt_image"] == {"count": 1, "examples": fx.corrupt}
    assert skipped["missing_image"] == {"count": 1, "examples": fx.missing}
    assert report["splits"]["train"]["excluded"] == {"no_objects": 1}
    assert not set(ds["image_id"]) & set(fx.corrupt + fx.missing + fx.no_objects)
    assert all(ds[i]["image"].size == (16, 16) for i in range(len(ds)))  # every kept image decodes
    skip_warnings = [w for w in warnings_seen if "skipped bad items" in w]
    assert len(skip_warnings) == 1 and "corrupt_image x1" in skip_warnings[0] and "missing_image x1" in skip_warnings[0]

    report = C.coco_entailment_docs(n_train=400, n_test=10, coco_dir=str(fx.root)).report
    skipped = report["splits"]["train"]["skipped"]
    assert skipped["empty_caption"] == {"count": 1, "examples": fx.blank_captions}
    assert skipped["absent_from_instances"] == {"count": 1, "examples": fx.orphan_captions}


def test_fewer_items_than_requested_uses_all_and_warns_once(fx, warnings_seen):
    built = C.coco_multilabel_docs(n_train=10_000, n_test=5, coco_dir=str(fx.root))
    ds, report = built.docs, built.report
    usable = 40 - len(fx.corrupt) - len(fx.missing)
    train = report["splits"]["train"]
    assert (train["requested"], train["used"], train["images"]) == (10_000, usable, usable)
    assert Counter(ds["probe_split"]) == {"train": usable, "test": 5}
    short = [w for w in warnings_seen if "fewer usable items" in w]
    assert len(short) == 1 and f"{usable} of 10000" in short[0]
    assert short[0] in report["warnings"]


def test_only_the_needed_images_are_decoded(fx, monkeypatch):
    calls: list[object] = []
    real = img.decode_problem
    monkeypatch.setattr(img, "decode_problem", lambda data: calls.append(data) or real(data))
    C.coco_multilabel_docs(n_train=3, n_test=2, coco_dir=str(fx.root))
    assert 5 <= len(calls) <= 2 * (8 + 4) < 60  # a small margin per split, never the whole split


# ------------------------------------------------------------------- errors
def test_missing_folder_and_files_raise_with_the_fix(fx, tmp_path, monkeypatch):
    monkeypatch.setenv(C.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=f"{C.ENV_VAR}.*nowhere"):
        C.coco_entailment_docs(n_train=2, n_test=2)
    partial = tmp_path / "partial"
    shutil.copytree(fx.root / "annotations", partial / "annotations")
    (partial / "annotations" / "captions_train2017.json").unlink()
    (partial / "train2017").mkdir()
    monkeypatch.setenv(C.ENV_VAR, str(partial))
    with pytest.raises(FileNotFoundError, match="captions_train2017.json"):
        C.coco_entailment_docs(n_train=2, n_test=2)
    (partial / "annotations" / "instances_val2017.json").unlink()
    with pytest.raises(FileNotFoundError, match="instances_val2017.json"):
        C.coco_multilabel_docs(n_train=2, n_test=2)
    shutil.rmtree(partial / "train2017")
    with pytest.raises(FileNotFoundError, match="train2017.*unzip"):
        C.coco_multilabel_docs(n_train=2, n_test=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "disk"}, "source must be one of"),
        ({"source": "local"}, "LMMS_PROBE_COCO_DIR"),
        ({"negatives": "easy"}, "negatives must be one of"),
        ({"n_train": 0}, "n_train must be an int >= 1"),
        ({"captions_per_image": 0}, "captions_per_image"),
    ],
)
def test_bad_arguments_raise_with_the_allowed_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        C.coco_entailment_docs(**kwargs)


# ------------------------------------------------------------------------ hub
def _rows(ds: datasets.Dataset) -> list[dict]:
    return sorted(ds.remove_columns("image").to_list(), key=lambda row: row["uid"])


@pytest.mark.parametrize("task", list(BUILDERS))
def test_hub_layout_gives_the_same_docs_as_the_release(clean, task, tmp_path):
    fixture, images, captions = clean
    kwargs = {"hub_images": str(images), **({"hub_captions": str(captions)} if task == "entailment" else {})}
    local = BUILDERS[task](n_train=14, n_test=6, coco_dir=str(fixture.root)).docs
    built = BUILDERS[task](n_train=14, n_test=6, source="hub", **kwargs)
    hub, report = built.docs, built.report
    assert report["source"]["kind"] == "hub" and report["source"]["images"] == str(images)
    assert hub.features == local.features
    assert _rows(hub) == _rows(local)
    assert all(hub[i]["image"].size == (16, 16) for i in range(len(hub)))
    cached = list((tmp_path / "hf-cache" / "lmms_probe_tasks" / "images").rglob("*.img"))
    assert len(cached) >= len(set(hub["image_id"]))  # each selected image written once (plus the batch margin)


def test_auto_uses_the_env_folder_else_the_hub(clean, monkeypatch):
    fixture, images, _ = clean
    monkeypatch.setenv(C.ENV_VAR, str(fixture.root))
    report = C.coco_multilabel_docs(n_train=2, n_test=2).report
    assert report["source"] == {"kind": "local", "coco_dir": str(fixture.root)}
    monkeypatch.delenv(C.ENV_VAR)
    report = C.coco_multilabel_docs(n_train=2, n_test=2, hub_images=str(images)).report
    assert report["source"]["kind"] == "hub"


def test_hub_streams_only_the_selected_images(clean, monkeypatch):
    _, images, _ = clean
    stored: list[str] = []
    real = img.store_image_bytes
    monkeypatch.setattr(
        img, "store_image_bytes", lambda data, folder, key: stored.append(key) or real(data, folder, key)
    )
    passes: list[list[str]] = []
    real_open = coco_source.open_stream
    monkeypatch.setattr(coco_source, "open_stream", lambda *a, **k: passes.append(a[2]) or real_open(*a, **k))
    ds = C.coco_multilabel_docs(n_train=2, n_test=1, source="hub", hub_images=str(images)).docs
    assert passes == [["image_id", "objects"]] * 2 + [["image_id", "image"]] * 2  # annotations, then images
    assert set(ds["image_id"]) <= {k.removesuffix(".img") for k in stored}
    assert len(stored) <= (8 + 3) * 2 < 36  # a batch with a margin, not the 36 images of the copy


def test_hub_copies_that_do_not_join_raise(clean, tmp_path):
    fixture, images, captions = clean
    shifted = tmp_path / "shifted"
    shutil.copytree(captions, shifted)
    for path in (shifted / "data").glob("*.parquet"):
        table = pq.read_table(path)
        column = table.schema.get_field_index("image_id")
        pq.write_table(table.set_column(column, "image_id", pc.add(table["image_id"], 1)), path)
    with pytest.raises(RuntimeError, match="do not share COCO image ids"):
        C.coco_entailment_docs(n_train=2, n_test=2, source="hub", hub_images=str(images), hub_captions=str(shifted))


def test_unreachable_hub_raises_with_the_offline_fix(tmp_path):
    with pytest.raises(RuntimeError, match="LMMS_PROBE_COCO_DIR"):
        C.coco_multilabel_docs(n_train=2, n_test=2, source="hub", hub_images=str(tmp_path / "no-such-copy"))


# -------------------------------------------------------------- lmms-eval
def test_tasks_and_group_load_through_lmms_eval(clean, tmp_path, monkeypatch):
    from lmms_eval.tasks import TaskManager

    fixture, _, _ = clean
    snli = write_snli_ve(tmp_path / "snli")
    monkeypatch.setenv(C.ENV_VAR, str(fixture.root))
    monkeypatch.setenv("LMMS_PROBE_SNLI_VE_DIR", str(snli.root))
    manager = TaskManager("ERROR", include_path=str(ROOT / "task_yamls"), include_defaults=False)
    new = ["probe_coco_entailment", "probe_coco_objects", "probe_coco_multilabel", "probe_snli_ve"]
    assert set(new) <= set(manager.match_tasks(["probe_*"]))
    assert "lmms_probe_paper" not in manager.match_tasks(["probe_*"])
    tasks = manager.load_task_or_group(new)
    expected = {
        "probe_coco_entailment": {"label", "caption_image_id", "similarity"},
        "probe_coco_objects": {"label", "category"},
        "probe_coco_multilabel": {"labels"},
        "probe_snli_ve": {"label"},
    }
    for name, extra in expected.items():
        task = tasks[name]
        docs = task.dataset["probe"]
        assert set(docs.column_names) == {"uid", "probe_split", "image", "image_id", "text"} | extra
        assert set(docs["probe_split"]) == {"train", "test"}
        assert task.spec.label_names  # read from the ClassLabel feature
        assert task.data_report["splits"]["train"]["requested"] == 10_000  # the YAML default
        json.dumps(task.data_report)  # plain data: it goes into the artifact JSON
    assert tasks["probe_coco_multilabel"].spec.n_classes == 80
    group = manager.load_task_or_group(["lmms_probe_paper"])
    (members,) = group.values()
    assert sorted(members) == ["probe_coco_entailment", "probe_coco_objects"]
