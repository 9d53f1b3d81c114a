"""Tests of the SNLI-VE probe source on fixtures in the release's and the hub copy's schemas."""

from __future__ import annotations

import json
from collections import Counter

import datasets
import pytest
from loguru import logger

from lmms_probe_tasks.data import images as img
from lmms_probe_tasks.data import snli_ve as S
from lmms_probe_tasks.data.contract import BuiltDocs, check_docs
from tests.datasets_fixtures import SnliFixture, write_snli_ve, write_snli_ve_hub


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> SnliFixture:
    """Train has a "-" label, a blank hypothesis, a truncated JPEG and a missing one."""
    return write_snli_ve(tmp_path_factory.mktemp("snli") / "snli", corrupt=1, missing=1)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv(S.ENV_VAR, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture
def warnings_seen():
    seen: list[str] = []
    handle = logger.add(lambda m: seen.append(m.record["message"]), level="WARNING")
    yield seen
    logger.remove(handle)


def _gold(fx: SnliFixture) -> dict[tuple[str, str], str]:
    return {(r["Flickr30K_ID"], r["sentence2"]): r["gold_label"] for records in fx.records.values() for r in records}


@pytest.mark.parametrize(("n_train", "n_test"), [(30, 12), (7, 5), (1, 1)])
def test_counts_balance_labels_and_disjoint_images(fx, n_train, n_test):
    built = S.snli_ve_docs(n_train=n_train, n_test=n_test, snli_ve_dir=str(fx.root))
    ds, report = built.docs, built.report
    assert len(ds) == n_train + n_test and len(set(ds["uid"])) == len(ds)
    assert Counter(ds["probe_split"]) == {"train": n_train, "test": n_test}
    assert tuple(ds.features["label"].names) == ("entailment", "neutral", "contradiction")
    gold = _gold(fx)
    train_ids = {r["Flickr30K_ID"] for r in fx.records["train"]}
    test_ids = {r["Flickr30K_ID"] for r in fx.records["test"]}
    sides: dict[str, set[str]] = {"train": set(), "test": set()}
    for row in ds.remove_columns("image"):
        assert gold[(row["image_id"], row["text"])] == S.LABELS[row["label"]]  # label follows the record
        assert row["image_id"] in (train_ids if row["probe_split"] == "train" else test_ids)
        sides[row["probe_split"]].add(row["image_id"])
    assert not sides["train"] & sides["test"]
    for split, n in (("train", n_train), ("test", n_test)):
        labels = Counter(lab for s, lab in zip(ds["probe_split"], ds["label"], strict=True) if s == split)
        assert max(labels.values()) - min(labels.get(i, 0) for i in range(3)) <= 1  # a third per label
        assert report["splits"][split]["label_counts"] == {name: labels.get(i, 0) for i, name in enumerate(S.LABELS)}
        assert report["splits"][split]["used"] == n


def test_builder_returns_the_contract(fx):
    built = S.snli_ve_docs(n_train=4, n_test=2, snli_ve_dir=str(fx.root))
    assert isinstance(built, BuiltDocs)
    check_docs("snli_ve", built.docs, "label")
    json.dumps(built.report)  # plain data: it goes into the artifact JSON


def test_same_seed_same_docs(fx):
    a = S.snli_ve_docs(n_train=12, n_test=6, seed=1, snli_ve_dir=str(fx.root)).docs
    b = S.snli_ve_docs(n_train=12, n_test=6, seed=1, snli_ve_dir=str(fx.root)).docs
    c = S.snli_ve_docs(n_train=12, n_test=6, seed=2, snli_ve_dir=str(fx.root)).docs
    assert a["uid"] == b["uid"] and a["text"] == b["text"] and a["uid"] != c["uid"]


def test_bad_items_are_skipped_counted_and_warned_once(fx, warnings_seen):
    built = S.snli_ve_docs(n_train=10_000, n_test=3, snli_ve_dir=str(fx.root))
    ds, report = built.docs, built.report
    skipped = report["splits"]["train"]["skipped"]
    assert skipped["unknown_label"]["count"] == 1 and "'-'" in skipped["unknown_label"]["examples"][0]
    assert skipped["empty_hypothesis"]["count"] == 1
    assert skipped["corrupt_image"]["count"] == 6  # every candidate row behind the bad image (2 x 3 labels)
    assert skipped["missing_image"]["count"] == 6
    assert (
        fx.corrupt[0] in skipped["corrupt_image"]["examples"][0]
        and fx.missing[0] in skipped["missing_image"]["examples"][0]
    )
    assert not set(ds["image_id"]) & set(fx.corrupt + fx.missing)
    assert "" not in {t.strip() for t in ds["text"]}
    assert all(ds[i]["image"].size == (16, 16) for i in range(len(ds)))
    # 8 train images x 6 hypotheses, minus the two bad images' 12 rows.
    assert report["splits"]["train"]["used"] == 36
    assert len([w for w in warnings_seen if "skipped bad items" in w]) == 1
    short = [w for w in warnings_seen if "fewer usable items" in w]
    assert len(short) == 1 and "36 of 10000" in short[0]


def test_a_test_image_also_in_train_is_dropped(tmp_path):
    fixture = write_snli_ve(tmp_path / "snli", shared_test_image=True, dash_labels=0, blank_hypotheses=0)
    shared = fixture.records["test"][0]["Flickr30K_ID"]
    built = S.snli_ve_docs(n_train=100, n_test=100, snli_ve_dir=str(fixture.root))
    ds, report = built.docs, built.report
    assert report["splits"]["test"]["skipped"]["image_in_train"]["count"] == 6
    test_ids = {i for s, i in zip(ds["probe_split"], ds["image_id"], strict=True) if s == "test"}
    assert shared not in test_ids and test_ids


def test_missing_folder_and_files_raise_with_the_fix(fx, tmp_path, monkeypatch):
    monkeypatch.setenv(S.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=f"{S.ENV_VAR}.*nowhere"):
        S.snli_ve_docs(n_train=2, n_test=2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="snli_ve_train.jsonl"):
        S.snli_ve_docs(n_train=2, n_test=2, snli_ve_dir=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="source must be one of"):
        S.snli_ve_docs(source="web")


def test_hub_layout_gives_the_same_docs_as_the_release(tmp_path):
    fixture = write_snli_ve(tmp_path / "snli")  # with a "-" label and a blank hypothesis, no bad images
    hub = write_snli_ve_hub(tmp_path / "hub", fixture)
    built = S.snli_ve_docs(n_train=24, n_test=9, snli_ve_dir=str(fixture.root))
    local, local_report = built.docs, built.report
    built = S.snli_ve_docs(n_train=24, n_test=9, source="hub", hub_dataset=str(hub))
    remote, report = built.docs, built.report
    assert report["source"] == {"kind": "hub", "dataset": str(hub)}
    assert remote.features == local.features
    assert remote.remove_columns("image").to_list() == local.remove_columns("image").to_list()
    assert report["splits"]["train"]["skipped"]["unknown_label"]["count"] == 1  # hub label -1
    assert (
        report["splits"]["train"]["skipped"]["empty_hypothesis"]
        == local_report["splits"]["train"]["skipped"]["empty_hypothesis"]
    )
    assert all(remote[i]["image"].size == (16, 16) for i in range(len(remote)))


def test_hub_streams_only_the_selected_images(tmp_path, monkeypatch):
    fixture = write_snli_ve(tmp_path / "snli", images={"train": 30, "dev": 1, "test": 10})
    hub = write_snli_ve_hub(tmp_path / "hub", fixture)
    stored: list[str] = []
    real = img.store_image_bytes
    monkeypatch.setattr(
        img, "store_image_bytes", lambda data, folder, key: stored.append(key) or real(data, folder, key)
    )
    passes: list[list[str]] = []
    real_open = S.open_stream
    monkeypatch.setattr(S, "open_stream", lambda *a, **k: passes.append(a[2]) or real_open(*a, **k))
    ds = S.snli_ve_docs(n_train=3, n_test=3, source="hub", hub_dataset=str(hub)).docs
    assert set(ds["image_id"]) <= {k.removesuffix(".jpg") for k in stored}
    assert len(stored) == len(set(stored)) < 40  # each image once, far from all 40
    assert passes.count(["filename", "image"]) == 2  # one image pass per split, all labels at once
    assert passes.count(["filename", "hypothesis", "label"]) == 2  # text passes read no image bytes


def test_unreachable_hub_raises_with_the_offline_fix(tmp_path):
    with pytest.raises(RuntimeError, match="LMMS_PROBE_SNLI_VE_DIR"):
        S.snli_ve_docs(n_train=2, n_test=2, source="hub", hub_dataset=str(tmp_path / "nothing-here"))
