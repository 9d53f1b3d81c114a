"""Build the documents of the two offline probe tasks from seeded synthetic scenes of coloured shapes.

Nothing is downloaded: scenes come from :mod:`lmms_probe_tasks.data.shapes_scenes`, so the
same arguments always give the same images (byte for byte), texts, labels and order.
Defaults: 240 probe-train and 120 probe-test documents, seed 0, 64 px images.

Entailment task (``entailment_docs``, SNLI-VE-like: entailment / neutral / contradiction)
    Every entailment scene has a curtain: 1-4 shapes are visible outside it; with
    probability 1/2 one more shape is drawn inside the band and is therefore completely
    hidden. Each scene gets one statement template and three statements, one per
    label, so neither the image alone nor the template alone tells the label:

    * ``colour``      "The circle is red."
    * ``not_colour``  "The circle is not red."
    * ``left_of``     "The circle is to the left of the square."
    * ``above``       "The circle is above the square."

    Labels:

    * entailment: every shape named is visible and the statement holds;
    * contradiction: every shape named is visible and the statement does not hold
      (the visible circle has another colour; the two shapes are in different grid
      columns (rows) in the other order). Since a kind occurs once per scene, the
      curtain can never hide a second circle that would make a contradiction true:
      contradictions are decided by visible content only;
    * neutral: a shape named in the statement is not visible. It is either really
      behind the curtain (half of the time when the scene hides a shape) or absent
      from the scene, and the two cases give identical pixels, so whether it exists,
      and its colour, are undecidable from the image. For ``left_of`` the curtain is a
      full-width row band and the visible shape named sits in the middle column
      (``above``: full-height column band, middle row), so even if the hidden shape
      exists it could lie on either side of the visible one: the relation is
      undecidable too.

    Every template occurs with all three labels, and within each split templates and
    labels are balanced (each label on a third of the documents, each template with
    each label equally often), so a text-only classifier on the statement's form is at
    chance. The number of visible shapes is drawn from the same range for all three
    labels of a template.

Objects task (``object_docs``, multi-label)
    1-4 shapes of distinct kinds on the plain grid, no curtain. ``labels`` are the
    sorted indices into ``SHAPE_KINDS`` of the kinds drawn; the prompt is generic
    (``text`` is empty), so only the image tells the labels. The j-th scene of each
    split always contains kind ``j % 6``, so every kind occurs in both splits as soon
    as a split has 6 documents.

Both builders return a :class:`~lmms_probe_tasks.data.contract.BuiltDocs` whose report is
empty (generated data skips nothing): the union of probe-train and probe-test documents
(column ``probe_split``), shuffled with a seeded stratified order so that any prefix
(lmms-eval's ``--limit N``) holds both splits and all labels in about their overall
proportions. A scene (``scene_id``) belongs to one split only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import datasets
import numpy as np

from lmms_probe_tasks.data.contract import BuiltDocs, check_sizes
from lmms_probe_tasks.data.sampling import seeded_rng, stratified_order
from lmms_probe_tasks.data.shapes_scenes import (
    COLOURS,
    SHAPE_KINDS,
    Scene,
    check_image_size,
    curtain_scene,
    open_scene,
    pick,
    render_all,
)

#: Default probe-train and probe-test documents (the README's sizes).
N_TRAIN = 240
N_TEST = 120
#: Label ids 0, 1, 2 in SNLI-VE's order.
ENTAILMENT_LABELS: tuple[str, ...] = ("entailment", "neutral", "contradiction")
ENTAILMENT, NEUTRAL, CONTRADICTION = range(3)

#: Statement templates by name (the ``template`` column); ``a``/``b`` are shape kinds.
ENTAILMENT_TEMPLATES: dict[str, str] = {
    "colour": "The {a} is {colour}.",
    "not_colour": "The {a} is not {colour}.",
    "left_of": "The {a} is to the left of the {b}.",
    "above": "The {a} is above the {b}.",
}
#: For a relation template: the grid axis the relation compares ("col" or "row").
RELATION_AXIS: dict[str, str] = {"left_of": "col", "above": "row"}

# Salts of the random streams: each (task, split) has its own stream, so growing
# n_test never changes the train documents, and the two tasks are unrelated.
_TASK_SALT = {"ent": 0, "obj": 1}

R = TypeVar("R")


@dataclass(frozen=True)
class EntailmentRecord:
    """One entailment document before rendering.

    Attributes:
        uid: Unique document id.
        probe_split: "train" or "test".
        scene: The scene the statement is about.
        text: The statement.
        label: Index into ``ENTAILMENT_LABELS``.
        template: Key of ``ENTAILMENT_TEMPLATES``.
        mentions: The shape kinds the statement names, in order.
    """

    uid: str
    probe_split: str
    scene: Scene
    text: str
    label: int
    template: str
    mentions: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class ObjectRecord:
    """One objects document before rendering.

    Attributes:
        uid: Unique document id.
        probe_split: "train" or "test".
        scene: The scene (no curtain: every shape is visible).
        labels: Sorted indices into ``SHAPE_KINDS`` of the kinds drawn.
    """

    uid: str
    probe_split: str
    scene: Scene
    labels: tuple[int, ...]


# ----------------------------------------------------------- entailment task
def _statement(rng: np.random.Generator, scene: Scene, template: str, label: int) -> tuple[str, tuple[str, ...]]:
    """Write the statement of ``template`` that has ``label`` for ``scene``; return it and the kinds it names."""
    visible = scene.visible
    axis = RELATION_AXIS.get(template)
    if label == NEUTRAL:
        hidden = [s.kind for s in scene.shapes if s.hidden]
        absent = [k for k in SHAPE_KINDS if scene.shape(k) is None]
        # Name the hidden shape half of the time, so "neutral" covers both a shape that
        # exists behind the curtain and one that does not (identical pixels).
        unseen = pick(rng, hidden) if hidden and rng.random() < 0.5 else pick(rng, absent)
        if axis is None:
            colour = pick(rng, COLOURS)
            return ENTAILMENT_TEMPLATES[template].format(a=unseen, colour=colour), (unseen,)
        middle = [s for s in visible if (s.row if axis == "row" else s.col) == 1]
        seen = pick(rng, middle).kind
        a, b = (seen, unseen) if rng.random() < 0.5 else (unseen, seen)
        return ENTAILMENT_TEMPLATES[template].format(a=a, b=b), (a, b)
    if axis is None:
        shape = pick(rng, visible)
        other = pick(rng, [c for c in COLOURS if c != shape.colour])
        holds = (label == ENTAILMENT) == (template == "colour")
        colour = shape.colour if holds else other
        return ENTAILMENT_TEMPLATES[template].format(a=shape.kind, colour=colour), (shape.kind,)
    pairs = [(p.kind, q.kind) for p in visible for q in visible if (p.row < q.row if axis == "row" else p.col < q.col)]
    first, second = pick(rng, pairs)
    a, b = (first, second) if label == ENTAILMENT else (second, first)
    return ENTAILMENT_TEMPLATES[template].format(a=a, b=b), (a, b)


def _entailment_split(seed: int, split: str, n: int) -> list[EntailmentRecord]:
    rng = seeded_rng(seed, _TASK_SALT["ent"], split)
    n_scenes = math.ceil(n / 3)
    names = list(ENTAILMENT_TEMPLATES)
    # Balanced template assignment, shuffled; with three labels per scene this balances
    # every (template, label) pair.
    templates = [names[i] for i in rng.permutation(np.arange(n_scenes) % len(names))]
    records: list[EntailmentRecord] = []
    for s, template in enumerate(templates):
        scene = curtain_scene(rng, f"shapes-ent-{split}-scene-{s:05d}", RELATION_AXIS.get(template))
        labels = [int(x) for x in rng.permutation(len(ENTAILMENT_LABELS))][: n - 3 * s]
        for label in labels:
            text, mentions = _statement(rng, scene, template, label)
            uid = f"shapes-ent-{split}-{len(records):05d}"
            records.append(EntailmentRecord(uid, split, scene, text, label, template, mentions))
    return records


def entailment_records(n_train: int = N_TRAIN, n_test: int = N_TEST, seed: int = 0) -> list[EntailmentRecord]:
    """Return the entailment documents as records (scene descriptions included), in dataset order.

    Args:
        n_train: Number of probe-train documents (>= 1).
        n_test: Number of probe-test documents (>= 1).
        seed: Seed of the generator (>= 0).

    Returns:
        ``n_train + n_test`` records, in the order of :func:`entailment_docs`'s rows.

    Raises:
        ValueError: An argument is out of range.
    """
    return _in_dataset_order(_entailment_split, "ent", lambda r: (r.probe_split, r.label), n_train, n_test, seed)


def entailment_docs(n_train: int = N_TRAIN, n_test: int = N_TEST, seed: int = 0, image_size: int = 64) -> BuiltDocs:
    """Build the entailment probe task's documents (see the module docstring for the design).

    Args:
        n_train: Number of probe-train documents (>= 1).
        n_test: Number of probe-test documents (>= 1).
        seed: Seed of the generator (>= 0).
        image_size: Image side in pixels (32-2048).

    Returns:
        Docs: a shuffled dataset of ``n_train + n_test`` rows with columns ``uid``,
        ``probe_split``, ``scene_id``, ``image``, ``text``, ``label`` (int, index into
        ``ENTAILMENT_LABELS``) and ``template``; an empty report.

    Raises:
        ValueError: An argument is out of range.
    """
    image_size = check_image_size(image_size)
    records = entailment_records(n_train, n_test, seed)
    targets = {
        "label": (datasets.ClassLabel(names=list(ENTAILMENT_LABELS)), [r.label for r in records]),
        "template": (datasets.Value("string"), [r.template for r in records]),
    }
    return _built(records, [r.text for r in records], image_size, targets)


# -------------------------------------------------------------- objects task
def _object_split(seed: int, split: str, n: int) -> list[ObjectRecord]:
    rng = seeded_rng(seed, _TASK_SALT["obj"], split)
    records = []
    for j in range(n):
        # Force kind j % 6 in, so every kind occurs in every split of >= 6 documents.
        scene, kinds = open_scene(rng, f"shapes-obj-{split}-scene-{j:05d}", j % len(SHAPE_KINDS))
        records.append(ObjectRecord(f"shapes-obj-{split}-{j:05d}", split, scene, tuple(sorted(kinds))))
    return records


# The public records/docs functions of both tasks take the same arguments; each documents
# them in full (Google style), so their docstrings repeat those of the entailment task.
def object_records(n_train: int = N_TRAIN, n_test: int = N_TEST, seed: int = 0) -> list[ObjectRecord]:
    """Return the objects documents as records (scene descriptions included), in dataset order.

    Args:
        n_train: Number of probe-train documents (>= 1).
        n_test: Number of probe-test documents (>= 1).
        seed: Seed of the generator (>= 0).

    Returns:
        ``n_train + n_test`` records, in the order of :func:`object_docs`'s rows.

    Raises:
        ValueError: An argument is out of range.
    """
    return _in_dataset_order(_object_split, "obj", lambda r: r.probe_split, n_train, n_test, seed)


def object_docs(n_train: int = N_TRAIN, n_test: int = N_TEST, seed: int = 0, image_size: int = 64) -> BuiltDocs:
    """Build the objects (multi-label shape presence) probe task's documents.

    Args:
        n_train: Number of probe-train documents (>= 1).
        n_test: Number of probe-test documents (>= 1).
        seed: Seed of the generator (>= 0).
        image_size: Image side in pixels (32-2048).

    Returns:
        Docs: a shuffled dataset of ``n_train + n_test`` rows with columns ``uid``,
        ``probe_split``, ``scene_id``, ``image``, ``text`` (always "": the prompt names
        no kind) and ``labels`` (sorted list of indices into ``SHAPE_KINDS``); an empty report.

    Raises:
        ValueError: An argument is out of range.
    """
    image_size = check_image_size(image_size)
    records = object_records(n_train, n_test, seed)
    # ClassLabel records the kind names, so the task YAML need not repeat them.
    # datasets >= 4 spells a variable-length list List; older releases Sequence.
    labels = getattr(datasets, "List", datasets.Sequence)(datasets.ClassLabel(names=list(SHAPE_KINDS)))
    return _built(records, ["" for _ in records], image_size, {"labels": (labels, [list(r.labels) for r in records])})


def _in_dataset_order(
    split_records: Callable[[int, str, int], list[R]],
    task: str,
    group: Callable[[R], Hashable],
    n_train: object,
    n_test: object,
    seed: object,
) -> list[R]:
    """Check the sizes, generate both splits' records and order them stratified by ``group``."""
    n_train, n_test, seed = check_sizes(n_train, n_test, seed, (N_TRAIN, N_TEST), spell_out=True)
    records = split_records(seed, "train", n_train) + split_records(seed, "test", n_test)
    order = stratified_order(seed, _TASK_SALT[task], [group(r) for r in records])
    return [records[i] for i in order]


def _built(
    records: Sequence[EntailmentRecord | ObjectRecord],
    texts: list[str],
    image_size: int,
    targets: dict[str, tuple[Any, list[Any]]],
) -> BuiltDocs:
    """Render the records' scenes and return the docs: the shared columns, then ``targets`` (name -> feature, values).

    Args:
        records: The documents, in dataset order.
        texts: Their ``text`` column.
        image_size: Image side in pixels.
        targets: Column name -> (its feature, its values), after the shared columns.
    """
    string = datasets.Value("string")
    features = datasets.Features(
        {
            "uid": string,
            "probe_split": string,
            "scene_id": string,
            "image": datasets.Image(),
            "text": string,
            **{name: feature for name, (feature, _) in targets.items()},
        }
    )
    columns = {
        "uid": [r.uid for r in records],
        "probe_split": [r.probe_split for r in records],
        "scene_id": [r.scene.scene_id for r in records],
        "image": render_all([r.scene for r in records], image_size),
        "text": texts,
        **{name: values for name, (_, values) in targets.items()},
    }
    return BuiltDocs(datasets.Dataset.from_dict(columns, features=features))
