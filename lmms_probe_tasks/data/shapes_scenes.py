"""Sample and draw the seeded synthetic scenes of coloured shapes behind the two shapes tasks.

An image is a plain white square cut into a 3 x 3 grid of cells. A scene holds a few
shapes, each in its own cell (so shapes never overlap and their left/right and
above/below relations are unambiguous), each with a random size (60-80 % of a cell,
about 13-17 px at 64 px) and a random offset inside its cell. A kind (circle, square,
...) occurs at most once per scene, so "the circle" always names one shape; colours may
repeat. An entailment scene also has a grey *curtain*: an opaque band covering one full
row or one full column of the grid, which may hide one more shape completely.

Scenes are descriptions sampled with ``numpy.random.default_rng`` and drawn with PIL when
the documents are built, so the same arguments always give the same images, byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image, ImageDraw

from lmms_probe_tasks.data.contract import is_int

SHAPE_KINDS: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
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
CELLS: tuple[tuple[int, int], ...] = tuple((r, c) for r in range(GRID) for c in range(GRID))
MIN_IMAGE_SIZE = 32
MAX_IMAGE_SIZE = 2048
MAX_SHAPES = 4
# Shape side as a fraction of a cell side, and the empty margin kept inside a cell.
# The margin (>= 1 px at 32 px) keeps shapes of neighbouring cells apart and a hidden
# shape fully under the curtain after rounding to pixels.
SIZE_RANGE = (0.6, 0.8)
CELL_MARGIN = 0.1

T = TypeVar("T")


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

        Returns:
            An RGB ``PIL.Image.Image``.
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


# ------------------------------------------------------------------ sampling
def pick(rng: np.random.Generator, items: Sequence[T]) -> T:
    """Return one of ``items``, drawn uniformly."""
    return items[int(rng.integers(len(items)))]


def place(rng: np.random.Generator, kind: str, colour: str, row: int, col: int, hidden: bool) -> Shape:
    """Return a shape of random size at a random offset inside the cell ``(row, col)``."""
    side = rng.uniform(*SIZE_RANGE)
    # Random offset inside the cell, keeping CELL_MARGIN free on every side.
    dx, dy = CELL_MARGIN + rng.uniform(0.0, 1.0 - 2 * CELL_MARGIN - side, size=2)
    x0, y0 = (col + dx) / GRID, (row + dy) / GRID
    return Shape(kind, colour, row, col, (x0, y0, x0 + side / GRID, y0 + side / GRID), hidden)


def curtain_scene(rng: np.random.Generator, scene_id: str, axis: str | None) -> Scene:
    """Sample a scene with a curtain: 1-4 visible shapes outside the band, one more hidden in it half of the time.

    Args:
        rng: The split's random stream.
        scene_id: Id of the scene.
        axis: The grid axis (``col`` or ``row``) a relation statement will compare, or
            None. A relation along columns gets a curtain spanning all columns (a row
            band), so a hidden shape could be on either side of a visible one, and vice
            versa; it also needs two visible shapes apart along the axis and one in the
            middle (the visible partner of a neutral statement).

    Returns:
        The scene; the same visible-count range for every statement about it (no count leak).
    """
    if axis == "col":
        band_axis = "row"
    elif axis == "row":
        band_axis = "col"
    else:
        band_axis = pick(rng, ("row", "col"))
    band = int(rng.integers(GRID))
    in_band = [(r, c) for r, c in CELLS if (r if band_axis == "row" else c) == band]
    outside = [cell for cell in CELLS if cell not in in_band]
    n_visible = int(rng.integers(2 if axis else 1, MAX_SHAPES + 1))
    while True:
        chosen = [outside[i] for i in rng.choice(len(outside), size=n_visible, replace=False)]
        if axis is None:
            break
        coords = [r if axis == "row" else c for r, c in chosen]
        if len(set(coords)) >= 2 and 1 in coords:
            break
    n_hidden = int(rng.integers(0, 2))
    kinds = [SHAPE_KINDS[i] for i in rng.permutation(len(SHAPE_KINDS))]
    colours = [COLOURS[i] for i in rng.integers(len(COLOURS), size=n_visible + n_hidden)]
    shapes = [place(rng, kinds[i], colours[i], *chosen[i], hidden=False) for i in range(n_visible)]
    if n_hidden:
        row, col = in_band[int(rng.integers(len(in_band)))]
        shapes.append(place(rng, kinds[n_visible], colours[n_visible], row, col, hidden=True))
    return Scene(scene_id, tuple(shapes), (band_axis, band))


def open_scene(rng: np.random.Generator, scene_id: str, forced: int) -> tuple[Scene, list[int]]:
    """Sample a scene without a curtain: 1-4 shapes of distinct kinds, kind ``forced`` among them.

    Args:
        rng: The split's random stream.
        scene_id: Id of the scene.
        forced: Index into ``SHAPE_KINDS`` of a kind the scene must contain.

    Returns:
        The scene, and the indices into ``SHAPE_KINDS`` of its kinds (``forced`` first).
    """
    n_shapes = int(rng.integers(1, MAX_SHAPES + 1))
    others = [i for i in rng.permutation(len(SHAPE_KINDS)) if i != forced]
    kinds = [forced, *others[: n_shapes - 1]]
    colours = rng.integers(len(COLOURS), size=n_shapes)
    where = rng.choice(len(CELLS), size=n_shapes, replace=False)
    shapes = tuple(
        place(rng, SHAPE_KINDS[k], COLOURS[c], *CELLS[w], hidden=False)
        for k, c, w in zip(kinds, colours, where, strict=True)
    )
    return Scene(scene_id, shapes), [int(k) for k in kinds]


# ----------------------------------------------------------------- rendering
def check_image_size(image_size: object) -> int:
    """Return ``image_size`` as an int, or raise naming the allowed range.

    Raises:
        ValueError: ``image_size`` is not a whole number in ``[MIN_IMAGE_SIZE, MAX_IMAGE_SIZE]``.
    """
    if not is_int(image_size) or not MIN_IMAGE_SIZE <= int(image_size) <= MAX_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be an int in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}] (got {image_size!r}); "
            f"shapes are unreadable below {MIN_IMAGE_SIZE} px: pass e.g. image_size=64"
        )
    return int(image_size)


def render_all(scenes: Sequence[Scene], image_size: int) -> list[Image.Image]:
    """Draw each scene once (an entailment scene backs three documents), one image per entry of ``scenes``."""
    cache: dict[str, Image.Image] = {}
    for scene in scenes:
        if scene.scene_id not in cache:
            cache[scene.scene_id] = scene.render(image_size)
    return [cache[s.scene_id] for s in scenes]
