"""Generate the documents of the two offline probe tasks from seeded synthetic scenes of coloured shapes.

Nothing is downloaded: every scene is a small geometric description sampled with
``numpy.random.default_rng`` and drawn with PIL when the documents are built, so the
same arguments always give the same images (byte for byte), texts, labels and order.

Scenes
    An image is a plain white square cut into a 3 x 3 grid of cells. A scene holds a
    few shapes, each in its own cell (so shapes never overlap and their left/right and
    above/below relations are unambiguous), each with a random size (60-80 % of a cell,
    about 13-17 px at 64 px) and a random offset inside its cell. A kind (circle,
    square, ...) occurs at most once per scene, so "the circle" always names one shape;
    colours may repeat.

Entailment task (``entailment_docs``, SNLI-VE-like: entailment / neutral / contradiction)
    Every entailment scene also has a grey *curtain*: an opaque band covering one full
    row or one full column of the grid. 1-4 shapes are visible outside it; with
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

Both builders return ONE ``datasets.Dataset``: the union of probe-train and probe-test
documents (column ``probe_split``), shuffled with a seeded stratified order so that
any prefix (lmms-eval's ``--limit N``) holds both splits and all labels in about their
overall proportions. A scene (``scene_id``) belongs to one split only.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import TypeGuard, TypeVar

import datasets
import numpy as np
from PIL import Image, ImageDraw

from lmms_probe_tasks.data.common import stratified_order

SHAPE_KINDS: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
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

COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (235, 200, 20),
    "purple": (140, 50, 180),
    "orange": (245, 130, 20),
}
BACKGROUND_RGB = (255, 255, 255)
# Mid grey: far from every shape colour and from the white background.
CURTAIN_RGB = (128, 128, 128)

GRID = 3
MIN_IMAGE_SIZE = 32
MAX_IMAGE_SIZE = 2048
MAX_SHAPES = 4
# Shape side as a fraction of a cell side, and the empty margin kept inside a cell.
# The margin (>= 1 px at 32 px) keeps shapes of neighbouring cells apart and a hidden
# shape fully under the curtain after rounding to pixels.
SIZE_RANGE = (0.6, 0.8)
CELL_MARGIN = 0.1

_SPLITS = ("train", "test")
# Salts of the random streams: each (task, split) has its own stream, so growing
# n_test never changes the train documents, and the two tasks are unrelated.
_TASK_SALT = {"ent": 0, "obj": 1}
_SHUFFLE_SALT = 2

T = TypeVar("T")


# ------------------------------------------------------------------ scene model
@dataclass(frozen=True)
class Shape:
    """One shape of a scene.

    Attributes:
        kind: One of ``SHAPE_KINDS``.
        colour: One of ``COLOURS``.
        row: Grid row of its cell (0 = top).
        col: Grid column of its cell (0 = left).
        box: ``(x0, y0, x1, y1)`` in fractions of the image side.
        hidden: Whether it lies under the curtain.
    """

    kind: str
    colour: str
    row: int
    col: int
    box: tuple[float, float, float, float]
    hidden: bool = False


@dataclass(frozen=True)
class Scene:
    """A scene description; ``render`` draws it at any size.

    Attributes:
        scene_id: Unique id, naming the task and the split.
        shapes: The shapes, visible and hidden.
        curtain: ``("row" | "col", index)`` of the grid band the curtain covers, or None.
    """

    scene_id: str
    shapes: tuple[Shape, ...]
    curtain: tuple[str, int] | None = None

    @property
    def visible(self) -> tuple[Shape, ...]:
        """The shapes not under the curtain."""
        return tuple(s for s in self.shapes if not s.hidden)

    @property
    def visible_kinds(self) -> frozenset[str]:
        """Kinds of the visible shapes."""
        return frozenset(s.kind for s in self.visible)

    def shape(self, kind: str) -> Shape | None:
        """Return the scene's shape of this kind (kinds are unique in a scene), or None."""
        return next((s for s in self.shapes if s.kind == kind), None)

    def curtain_box(self, image_size: int) -> tuple[int, int, int, int] | None:
        """Return the curtain's inclusive pixel box ``(x0, y0, x1, y1)`` at this size, or None."""
        if self.curtain is None:
            return None
        axis, index = self.curtain
        lo = math.floor(index * image_size / GRID)
        hi = math.ceil((index + 1) * image_size / GRID) - 1
        return (0, lo, image_size - 1, hi) if axis == "row" else (lo, 0, hi, image_size - 1)

    def render(self, image_size: int, *, include_hidden: bool = True, draw_curtain: bool = True) -> Image.Image:
        """Draw the scene as an RGB image of ``image_size`` x ``image_size``.

        Args:
            image_size: Side in pixels.
            include_hidden: Draw the shapes under the curtain (they are covered anyway;
                False exists so tests can check that they leave no visible trace).
            draw_curtain: Draw the curtain (False only for tests).
        """
        image = Image.new("RGB", (image_size, image_size), BACKGROUND_RGB)
        draw = ImageDraw.Draw(image)
        for shape in self.shapes:
            if include_hidden or not shape.hidden:
                _draw_shape(draw, shape, image_size)
        box = self.curtain_box(image_size)
        if draw_curtain and box is not None:
            draw.rectangle(box, fill=CURTAIN_RGB)
        return image


def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, image_size: int) -> None:
    x0, y0, x1, y1 = (round(v * image_size) for v in shape.box)
    x1, y1 = x1 - 1, y1 - 1  # PIL boxes include their last pixel
    fill = COLOUR_RGB[shape.colour]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if shape.kind == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif shape.kind == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif shape.kind == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape.kind == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    elif shape.kind == "star":
        outer = (x1 - x0) / 2
        # Inner radius 0.45 of the outer keeps the points thick enough to read at ~13 px.
        points = [
            (
                cx + (outer if i % 2 == 0 else 0.45 * outer) * math.cos(-math.pi / 2 + i * math.pi / 5),
                cy + (outer if i % 2 == 0 else 0.45 * outer) * math.sin(-math.pi / 2 + i * math.pi / 5),
            )
            for i in range(10)
        ]
        draw.polygon(points, fill=fill)
    elif shape.kind == "cross":
        half = (x1 - x0) / 6  # arms a third of the side thick
        draw.rectangle((round(cx - half), y0, round(cx + half), y1), fill=fill)
        draw.rectangle((x0, round(cy - half), x1, round(cy + half)), fill=fill)
    else:
        raise ValueError(f"unknown shape kind {shape.kind!r}; use one of {SHAPE_KINDS}")


def _place(rng: np.random.Generator, kind: str, colour: str, row: int, col: int, hidden: bool) -> Shape:
    side = rng.uniform(*SIZE_RANGE)
    # Random offset inside the cell, keeping CELL_MARGIN free on every side.
    dx, dy = CELL_MARGIN + rng.uniform(0.0, 1.0 - 2 * CELL_MARGIN - side, size=2)
    x0, y0 = (col + dx) / GRID, (row + dy) / GRID
    return Shape(kind, colour, row, col, (x0, y0, x0 + side / GRID, y0 + side / GRID), hidden)


def _pick(rng: np.random.Generator, items: Sequence[T]) -> T:
    return items[int(rng.integers(len(items)))]


# ----------------------------------------------------------- entailment task
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


def _entailment_scene(rng: np.random.Generator, scene_id: str, template: str) -> Scene:
    axis = RELATION_AXIS.get(template)
    # A relation along columns needs a curtain spanning all columns (a row band), so a
    # hidden shape could be on either side of a visible one; and vice versa.
    if axis == "col":
        band_axis = "row"
    elif axis == "row":
        band_axis = "col"
    else:
        band_axis = _pick(rng, ("row", "col"))
    band = int(rng.integers(GRID))
    cells = [(r, c) for r in range(GRID) for c in range(GRID)]
    in_band = [(r, c) for r, c in cells if (r if band_axis == "row" else c) == band]
    outside = [cell for cell in cells if cell not in in_band]

    # Same visible-count range for all three labels of a template (no count leak).
    n_visible = int(rng.integers(2 if axis else 1, MAX_SHAPES + 1))
    while True:
        chosen = [outside[i] for i in rng.choice(len(outside), size=n_visible, replace=False)]
        if axis is None:
            break
        coords = [r if axis == "row" else c for r, c in chosen]
        # Relations need two shapes apart along the axis (entailment/contradiction)
        # and one in the middle (the visible partner of a neutral statement).
        if len(set(coords)) >= 2 and 1 in coords:
            break
    n_hidden = int(rng.integers(0, 2))
    kinds = [SHAPE_KINDS[i] for i in rng.permutation(len(SHAPE_KINDS))]
    colours = [COLOURS[i] for i in rng.integers(len(COLOURS), size=n_visible + n_hidden)]
    shapes = [_place(rng, kinds[i], colours[i], *chosen[i], hidden=False) for i in range(n_visible)]
    if n_hidden:
        row, col = in_band[int(rng.integers(len(in_band)))]
        shapes.append(_place(rng, kinds[n_visible], colours[n_visible], row, col, hidden=True))
    return Scene(scene_id, tuple(shapes), (band_axis, band))


def _statement(rng: np.random.Generator, scene: Scene, template: str, label: int) -> tuple[str, tuple[str, ...]]:
    visible = scene.visible
    axis = RELATION_AXIS.get(template)
    if label == NEUTRAL:
        hidden = [s.kind for s in scene.shapes if s.hidden]
        absent = [k for k in SHAPE_KINDS if scene.shape(k) is None]
        # Name the hidden shape half of the time, so "neutral" covers both a shape that
        # exists behind the curtain and one that does not (identical pixels).
        unseen = _pick(rng, hidden) if hidden and rng.random() < 0.5 else _pick(rng, absent)
        if axis is None:
            colour = _pick(rng, COLOURS)
            return ENTAILMENT_TEMPLATES[template].format(a=unseen, colour=colour), (unseen,)
        middle = [s for s in visible if (s.row if axis == "row" else s.col) == 1]
        seen = _pick(rng, middle).kind
        a, b = (seen, unseen) if rng.random() < 0.5 else (unseen, seen)
        return ENTAILMENT_TEMPLATES[template].format(a=a, b=b), (a, b)
    if axis is None:
        shape = _pick(rng, visible)
        other = _pick(rng, [c for c in COLOURS if c != shape.colour])
        holds = (label == ENTAILMENT) == (template == "colour")
        colour = shape.colour if holds else other
        return ENTAILMENT_TEMPLATES[template].format(a=shape.kind, colour=colour), (shape.kind,)
    pairs = [(p.kind, q.kind) for p in visible for q in visible if (p.row < q.row if axis == "row" else p.col < q.col)]
    first, second = _pick(rng, pairs)
    a, b = (first, second) if label == ENTAILMENT else (second, first)
    return ENTAILMENT_TEMPLATES[template].format(a=a, b=b), (a, b)


def _entailment_split(seed: int, split: str, n: int) -> list[EntailmentRecord]:
    rng = np.random.default_rng([seed, _TASK_SALT["ent"], _SPLITS.index(split)])
    n_scenes = math.ceil(n / 3)
    names = list(ENTAILMENT_TEMPLATES)
    # Balanced template assignment, shuffled; with three labels per scene this balances
    # every (template, label) pair.
    templates = [names[i] for i in rng.permutation(np.arange(n_scenes) % len(names))]
    records: list[EntailmentRecord] = []
    for s, template in enumerate(templates):
        scene = _entailment_scene(rng, f"shapes-ent-{split}-scene-{s:05d}", template)
        labels = [int(x) for x in rng.permutation(len(ENTAILMENT_LABELS))][: n - 3 * s]
        for label in labels:
            text, mentions = _statement(rng, scene, template, label)
            uid = f"shapes-ent-{split}-{len(records):05d}"
            records.append(EntailmentRecord(uid, split, scene, text, label, template, mentions))
    return records


def entailment_records(n_train: int = 240, n_test: int = 120, seed: int = 0) -> list[EntailmentRecord]:
    """Return the entailment documents as records (scene descriptions included), in dataset order.

    Args:
        n_train: Number of probe-train documents (>= 1).
        n_test: Number of probe-test documents (>= 1).
        seed: Seed of the generator (>= 0).

    Raises:
        ValueError: An argument is out of range.
    """
    n_train, n_test, seed = _check_counts(n_train, n_test, seed)
    records = _entailment_split(seed, "train", n_train) + _entailment_split(seed, "test", n_test)
    order = _stratified_order(seed, "ent", [(r.probe_split, r.label) for r in records])
    return [records[i] for i in order]


def entailment_docs(n_train: int = 240, n_test: int = 120, seed: int = 0, image_size: int = 64) -> datasets.Dataset:
    """Build the entailment probe task's documents (see the module docstring for the design).

    Args:
        n_train: Number of probe-train documents (>= 1).
        n_test: Number of probe-test documents (>= 1).
        seed: Seed of the generator (>= 0).
        image_size: Image side in pixels (32-2048).

    Returns:
        A shuffled dataset of ``n_train + n_test`` rows with columns ``uid``,
        ``probe_split``, ``scene_id``, ``image``, ``text``, ``label`` (int, index into
        ``ENTAILMENT_LABELS``) and ``template``.

    Raises:
        ValueError: An argument is out of range.
    """
    image_size = _check_image_size(image_size)
    records = entailment_records(n_train, n_test, seed)
    images = _render_all([r.scene for r in records], image_size)
    features = datasets.Features(
        {
            "uid": datasets.Value("string"),
            "probe_split": datasets.Value("string"),
            "scene_id": datasets.Value("string"),
            "image": datasets.Image(),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(ENTAILMENT_LABELS)),
            "template": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "uid": [r.uid for r in records],
            "probe_split": [r.probe_split for r in records],
            "scene_id": [r.scene.scene_id for r in records],
            "image": images,
            "text": [r.text for r in records],
            "label": [r.label for r in records],
            "template": [r.template for r in records],
        },
        features=features,
    )


# -------------------------------------------------------------- objects task
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


def _object_split(seed: int, split: str, n: int) -> list[ObjectRecord]:
    rng = np.random.default_rng([seed, _TASK_SALT["obj"], _SPLITS.index(split)])
    cells = [(r, c) for r in range(GRID) for c in range(GRID)]
    records = []
    for j in range(n):
        n_shapes = int(rng.integers(1, MAX_SHAPES + 1))
        # Force kind j % 6 in, so every kind occurs in every split of >= 6 documents.
        forced = j % len(SHAPE_KINDS)
        others = [i for i in rng.permutation(len(SHAPE_KINDS)) if i != forced]
        kinds = [forced, *others[: n_shapes - 1]]
        colours = rng.integers(len(COLOURS), size=n_shapes)
        where = rng.choice(len(cells), size=n_shapes, replace=False)
        shapes = tuple(
            _place(rng, SHAPE_KINDS[k], COLOURS[c], *cells[w], hidden=False)
            for k, c, w in zip(kinds, colours, where, strict=True)
        )
        scene = Scene(f"shapes-obj-{split}-scene-{j:05d}", shapes)
        records.append(ObjectRecord(f"shapes-obj-{split}-{j:05d}", split, scene, tuple(sorted(int(k) for k in kinds))))
    return records


def object_records(n_train: int = 240, n_test: int = 120, seed: int = 0) -> list[ObjectRecord]:
    """Return the objects documents as records (scene descriptions included), in dataset order.

    Args:
        n_train: Number of probe-train documents (>= 1).
        n_test: Number of probe-test documents (>= 1).
        seed: Seed of the generator (>= 0).

    Raises:
        ValueError: An argument is out of range.
    """
    n_train, n_test, seed = _check_counts(n_train, n_test, seed)
    records = _object_split(seed, "train", n_train) + _object_split(seed, "test", n_test)
    order = _stratified_order(seed, "obj", [r.probe_split for r in records])
    return [records[i] for i in order]


def object_docs(n_train: int = 240, n_test: int = 120, seed: int = 0, image_size: int = 64) -> datasets.Dataset:
    """Build the objects (multi-label shape presence) probe task's documents.

    Args:
        n_train: Number of probe-train documents (>= 1).
        n_test: Number of probe-test documents (>= 1).
        seed: Seed of the generator (>= 0).
        image_size: Image side in pixels (32-2048).

    Returns:
        A shuffled dataset of ``n_train + n_test`` rows with columns ``uid``,
        ``probe_split``, ``scene_id``, ``image``, ``text`` (always "": the prompt names
        no kind) and ``labels`` (sorted list of indices into ``SHAPE_KINDS``).

    Raises:
        ValueError: An argument is out of range.
    """
    image_size = _check_image_size(image_size)
    records = object_records(n_train, n_test, seed)
    features = datasets.Features(
        {
            "uid": datasets.Value("string"),
            "probe_split": datasets.Value("string"),
            "scene_id": datasets.Value("string"),
            "image": datasets.Image(),
            "text": datasets.Value("string"),
            # datasets >= 4 spells a variable-length list List; older releases Sequence.
            # ClassLabel records the kind names, so the task YAML need not repeat them.
            "labels": getattr(datasets, "List", datasets.Sequence)(datasets.ClassLabel(names=list(SHAPE_KINDS))),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "uid": [r.uid for r in records],
            "probe_split": [r.probe_split for r in records],
            "scene_id": [r.scene.scene_id for r in records],
            "image": _render_all([r.scene for r in records], image_size),
            "text": ["" for _ in records],
            "labels": [list(r.labels) for r in records],
        },
        features=features,
    )


# ------------------------------------------------------------------- helpers
def _render_all(scenes: Sequence[Scene], image_size: int) -> list[Image.Image]:
    # Entailment scenes carry three statements each: draw each scene once.
    cache: dict[str, Image.Image] = {}
    for scene in scenes:
        if scene.scene_id not in cache:
            cache[scene.scene_id] = scene.render(image_size)
    return [cache[s.scene_id] for s in scenes]


def _stratified_order(seed: int, task: str, groups: Sequence[Hashable]) -> list[int]:
    """A seeded order in which every prefix holds each group in about its overall share (``--limit`` safe)."""
    return stratified_order(np.random.default_rng([seed, _TASK_SALT[task], _SHUFFLE_SALT]), groups)


def _is_int(value: object) -> TypeGuard[int | np.integer]:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_counts(n_train: object, n_test: object, seed: object) -> tuple[int, int, int]:
    checked: list[int] = []
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if not _is_int(value) or int(value) < 1:
            raise ValueError(
                f"{name} must be an int >= 1 (got {value!r}); pass a positive whole number of "
                f"probe-{name[2:]} documents, e.g. {name}={240 if name == 'n_train' else 120}"
            )
        checked.append(int(value))
    if not _is_int(seed) or int(seed) < 0:
        raise ValueError(f"seed must be an int >= 0 (got {seed!r}); pass a non-negative whole number, e.g. seed=0")
    return checked[0], checked[1], int(seed)


def _check_image_size(image_size: object) -> int:
    if not _is_int(image_size) or not MIN_IMAGE_SIZE <= int(image_size) <= MAX_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be an int in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}] (got {image_size!r}); "
            f"shapes are unreadable below {MIN_IMAGE_SIZE} px: pass e.g. image_size=64"
        )
    return int(image_size)
