"""Tests of the synthetic shapes scenes behind the two offline probe tasks."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest

from lmms_probe_tasks.data import shapes as S
from lmms_probe_tasks.data import shapes_scenes as SC
from lmms_probe_tasks.data.contract import BuiltDocs


@pytest.fixture(scope="module")
def ent():
    return S.entailment_docs().docs


@pytest.fixture(scope="module")
def obj():
    return S.object_docs().docs


@pytest.fixture(scope="module")
def ent_records():
    return S.entailment_records()


@pytest.fixture(scope="module")
def obj_records():
    return S.object_records()


def _oracle(record: S.EntailmentRecord) -> int:
    """Decide the label from the scene description alone, independently of the generator."""
    visible = {s.kind: s for s in record.scene.visible}
    if any(kind not in visible for kind in record.mentions):
        return S.NEUTRAL
    if record.template in ("colour", "not_colour"):
        colour = record.text.rstrip(".").split()[-1]
        holds = (visible[record.mentions[0]].colour == colour) == (record.template == "colour")
        return S.ENTAILMENT if holds else S.CONTRADICTION
    a, b = (visible[k] for k in record.mentions)
    lo, hi = (0, 2) if record.template == "left_of" else (1, 3)  # x or y extents of the boxes
    if a.box[hi] < b.box[lo]:
        return S.ENTAILMENT
    if b.box[hi] < a.box[lo]:
        return S.CONTRADICTION
    raise AssertionError(f"{record.uid}: the relation is ambiguous ({record.text})")


# ----------------------------------------------------------------- structure
@pytest.mark.parametrize("builder", [S.entailment_docs, S.object_docs])
@pytest.mark.parametrize(("n_train", "n_test"), [(240, 120), (7, 5), (1, 1), (13, 2)])
def test_split_counts_are_exact(builder, n_train, n_test):
    docs = builder(n_train=n_train, n_test=n_test).docs
    assert len(docs) == n_train + n_test
    assert Counter(docs["probe_split"]) == {"train": n_train, "test": n_test}


@pytest.mark.parametrize("builder", [S.entailment_docs, S.object_docs])
def test_builders_return_the_contract_with_an_empty_report(builder):
    built = builder(n_train=3, n_test=2)
    assert isinstance(built, BuiltDocs) and built.report == {}
    assert len(built.docs) == 5


def test_columns_and_types(ent, obj):
    assert set(ent.column_names) == {"uid", "probe_split", "scene_id", "image", "text", "label", "template"}
    assert set(obj.column_names) == {"uid", "probe_split", "scene_id", "image", "text", "labels"}
    row = ent[0]
    assert isinstance(row["text"], str) and row["text"]
    assert isinstance(row["label"], int) and row["label"] in (0, 1, 2)
    assert row["template"] in S.ENTAILMENT_TEMPLATES
    row = obj[0]
    assert row["text"] == "" and set(obj["text"]) == {""}
    assert isinstance(row["labels"], list) and all(isinstance(i, int) for i in row["labels"])


@pytest.mark.parametrize("fixture", ["ent", "obj"])
def test_uids_unique_and_scenes_disjoint(fixture, request):
    docs = request.getfixturevalue(fixture)
    assert len(set(docs["uid"])) == len(docs)
    scenes = {"train": set(), "test": set()}
    for split, scene_id in zip(docs["probe_split"], docs["scene_id"], strict=True):
        scenes[split].add(scene_id)
    assert scenes["train"] and scenes["test"]
    assert not scenes["train"] & scenes["test"]


def test_records_are_the_dataset_rows(ent, ent_records, obj, obj_records):
    assert [r.uid for r in ent_records] == ent["uid"]
    assert [r.text for r in ent_records] == ent["text"]
    assert [r.label for r in ent_records] == ent["label"]
    assert [r.scene.scene_id for r in ent_records] == ent["scene_id"]
    assert [r.uid for r in obj_records] == obj["uid"]
    assert [list(r.labels) for r in obj_records] == obj["labels"]


@pytest.mark.parametrize("builder", [S.entailment_docs, S.object_docs])
def test_deterministic_and_seed_dependent(builder):
    a, b = builder(30, 15, seed=3).docs, builder(30, 15, seed=3).docs
    other = builder(30, 15, seed=4).docs
    text_cols = [c for c in a.column_names if c != "image"]
    for ra, rb in zip(a, b, strict=True):
        assert {c: ra[c] for c in text_cols} == {c: rb[c] for c in text_cols}
        assert np.array_equal(np.asarray(ra["image"]), np.asarray(rb["image"]))
    images = [np.asarray(r["image"]) for r in a]
    other_images = [np.asarray(r["image"]) for r in other]
    assert not all(np.array_equal(x, y) for x, y in zip(images, other_images, strict=True))
    differs = [c for c in text_cols if a[c] != other[c] and c not in ("uid", "probe_split", "scene_id")]
    assert differs  # the texts/labels differ too, not only the pixels


def test_growing_one_split_keeps_the_other(ent_records):
    bigger = S.entailment_records(n_train=240, n_test=150)
    train = sorted((r.uid, r.text, r.label) for r in ent_records if r.probe_split == "train")
    assert train == sorted((r.uid, r.text, r.label) for r in bigger if r.probe_split == "train")


@pytest.mark.parametrize("size", [32, 48, 64, 97])
def test_images_are_rgb_of_the_requested_size(size):
    for builder in (S.entailment_docs, S.object_docs):
        docs = builder(6, 3, image_size=size).docs
        for row in docs:
            assert row["image"].mode == "RGB"
            assert row["image"].size == (size, size)


def test_first_rows_mix_splits_and_labels(ent, obj):
    assert set(ent[:40]["probe_split"]) == {"train", "test"}
    assert set(obj[:40]["probe_split"]) == {"train", "test"}
    assert set(ent[:40]["label"]) == {0, 1, 2}
    assert set(ent[:10]["label"]) == {0, 1, 2}
    assert len({tuple(x) for x in obj[:40]["labels"]}) > 5


def test_generation_is_fast():
    start = time.perf_counter()
    S.entailment_docs()
    S.object_docs()
    assert time.perf_counter() - start < 2.0


# ------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "name", "allowed"),
    [
        ({"n_train": 0}, "n_train", ">= 1"),
        ({"n_test": -3}, "n_test", ">= 1"),
        ({"n_train": 2.5}, "n_train", ">= 1"),
        ({"n_test": True}, "n_test", ">= 1"),
        ({"n_train": "240"}, "n_train", ">= 1"),
        ({"seed": -1}, "seed", ">= 0"),
        ({"image_size": 16}, "image_size", "[32, 2048]"),
        ({"image_size": 64.0}, "image_size", "[32, 2048]"),
    ],
)
@pytest.mark.parametrize("builder", [S.entailment_docs, S.object_docs])
def test_invalid_arguments_raise_helpful_errors(builder, kwargs, name, allowed):
    with pytest.raises(ValueError) as info:
        builder(**kwargs)
    message = str(info.value)
    assert name in message and allowed in message
    assert repr(next(iter(kwargs.values()))) in message  # names the bad value
    assert "e.g." in message  # says how to fix it


# -------------------------------------------------------------------- scenes
def _all_scenes(ent_records, obj_records):
    scenes = {r.scene.scene_id: r.scene for r in ent_records}
    scenes.update({r.scene.scene_id: r.scene for r in obj_records})
    return list(scenes.values())


def test_scenes_have_one_to_four_visible_non_overlapping_shapes_of_distinct_kinds(ent_records, obj_records):
    for scene in _all_scenes(ent_records, obj_records):
        assert 1 <= len(scene.visible) <= 4
        kinds = [s.kind for s in scene.shapes]
        assert len(kinds) == len(set(kinds))
        assert len({(s.row, s.col) for s in scene.shapes}) == len(scene.shapes)
        for s in scene.shapes:
            x0, y0, x1, y1 = s.box
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
            assert x1 - x0 >= 0.6 / 3  # >= 12 px at 64 px
        for i, p in enumerate(scene.shapes):
            for q in scene.shapes[i + 1 :]:
                apart_x = p.box[2] <= q.box[0] or q.box[2] <= p.box[0]
                apart_y = p.box[3] <= q.box[1] or q.box[3] <= p.box[1]
                assert apart_x or apart_y


@pytest.mark.parametrize("size", [32, 64, 97])
def test_curtain_hides_hidden_shapes_entirely_and_no_visible_one(ent_records, size):
    scenes = {r.scene.scene_id: r.scene for r in ent_records}.values()
    assert sum(any(s.hidden for s in scene.shapes) for scene in scenes) > 20
    for scene in scenes:
        assert scene.curtain is not None
        shown = np.asarray(scene.render(size))
        # Hidden shapes leave no trace: same pixels as never drawing them.
        assert np.array_equal(shown, np.asarray(scene.render(size, include_hidden=False)))
        # No visible shape reaches under the curtain.
        x0, y0, x1, y1 = scene.curtain_box(size)
        bare = np.asarray(scene.render(size, include_hidden=False, draw_curtain=False))
        assert (bare[y0 : y1 + 1, x0 : x1 + 1] == SC.BACKGROUND_RGB).all()


def _centre_pixel(image: np.ndarray, shape: SC.Shape) -> tuple[int, ...]:
    size = image.shape[0]
    cx = int((shape.box[0] + shape.box[2]) / 2 * size)
    cy = int((shape.box[1] + shape.box[3]) / 2 * size)
    return tuple(int(v) for v in image[cy, cx])


def test_shapes_are_drawn_in_their_colour(ent, ent_records, obj, obj_records):
    for docs, records in ((ent, ent_records), (obj, obj_records)):
        for row, record in list(zip(docs, records, strict=True))[:60]:
            image = np.asarray(row["image"])
            for shape in record.scene.shapes:
                expected = SC.CURTAIN_RGB if shape.hidden else SC.COLOUR_RGB[shape.colour]
                assert _centre_pixel(image, shape) == expected


# ---------------------------------------------------------------- entailment
def test_labels_balanced_in_each_split(ent):
    for split in ("train", "test"):
        labels = [lab for lab, sp in zip(ent["label"], ent["probe_split"], strict=True) if sp == split]
        counts = Counter(labels)
        assert set(counts) == {0, 1, 2}
        assert all(counts[k] >= 0.2 * len(labels) for k in (0, 1, 2))


def test_every_template_occurs_with_every_label_in_balance(ent):
    for split in ("train", "test"):
        by_template: dict[str, Counter] = {}
        for t, lab, sp in zip(ent["template"], ent["label"], ent["probe_split"], strict=True):
            if sp == split:
                by_template.setdefault(t, Counter())[lab] += 1
        assert set(by_template) == set(S.ENTAILMENT_TEMPLATES)
        for counts in by_template.values():
            assert len(counts) >= 2
            # A classifier that sees only the template is at chance.
            assert max(counts.values()) <= 0.4 * sum(counts.values())


def test_statements_fill_their_template(ent_records):
    for r in ent_records:
        a = S.ENTAILMENT_TEMPLATES[r.template].split("{a}")[0]
        assert r.text.startswith(a)
        assert all(kind in S.SHAPE_KINDS and kind in r.text for kind in r.mentions)


def test_labels_agree_with_the_scene(ent_records):
    for r in ent_records:
        assert _oracle(r) == r.label, (r.uid, r.text, r.scene)


def test_neutral_names_a_shape_that_is_not_visible(ent_records):
    hidden_but_present = absent = 0
    for r in ent_records:
        unseen = [k for k in r.mentions if k not in r.scene.visible_kinds]
        if r.label == S.NEUTRAL:
            assert len(unseen) == 1
            shape = r.scene.shape(unseen[0])
            if shape is None:
                absent += 1
            else:
                assert shape.hidden
                hidden_but_present += 1
        else:
            assert not unseen
    # Neutral covers both a shape really behind the curtain and one that does not exist.
    assert hidden_but_present > 10 and absent > 10


def test_contradictions_cannot_be_undone_by_the_curtain(ent_records):
    for r in ent_records:
        if r.label == S.CONTRADICTION:
            for kind in r.mentions:
                assert [s.kind for s in r.scene.shapes].count(kind) == 1
                assert not r.scene.shape(kind).hidden


def test_neutral_relations_are_undecidable_even_if_the_hidden_shape_exists(ent_records):
    for r in ent_records:
        if r.template in S.RELATION_AXIS and r.label == S.NEUTRAL:
            axis = S.RELATION_AXIS[r.template]
            band_axis, _ = r.scene.curtain
            # The curtain spans the whole relation axis ...
            assert band_axis != axis
            # ... and the visible shape named is in the middle, so a hidden one could be on either side.
            (seen,) = [r.scene.shape(k) for k in r.mentions if k in r.scene.visible_kinds]
            assert (seen.row if axis == "row" else seen.col) == 1


def test_each_scene_carries_all_three_labels(ent_records):
    by_scene: dict[str, set[int]] = {}
    for r in ent_records:
        by_scene.setdefault(r.scene.scene_id, set()).add(r.label)
    assert all(labels == {0, 1, 2} for labels in by_scene.values())


# ------------------------------------------------------------------ objects
def test_object_labels_are_the_drawn_kinds(obj_records):
    for r in obj_records:
        assert r.scene.curtain is None
        kinds = sorted(S.SHAPE_KINDS.index(s.kind) for s in r.scene.shapes)
        assert list(r.labels) == kinds
        assert len(r.labels) >= 1


def test_every_kind_present_in_both_splits(obj):
    for split in ("train", "test"):
        present = Counter(
            k for labels, sp in zip(obj["labels"], obj["probe_split"], strict=True) if sp == split for k in labels
        )
        assert set(present) == set(range(len(S.SHAPE_KINDS)))
        n = Counter(obj["probe_split"])[split]
        # Every kind is neither always nor never present: a learnable, non-trivial label.
        assert all(0.1 * n < present[k] < 0.9 * n for k in present)
