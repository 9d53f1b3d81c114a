"""Make the trained tiny LLaVA's training set: shapes scenes whose seeds no probe task uses, as token tensors.

The scenes come from the public record builders of :mod:`lmms_probe_tasks.data.shapes`
(:func:`~lmms_probe_tasks.data.shapes.entailment_records`,
:func:`~lmms_probe_tasks.data.shapes.object_records`), called with a builder seed of
:data:`TRAIN_SEED_BASE` + the model seed. Every random stream of those builders is
``numpy.random.default_rng([builder_seed, task_salt, split_index])``
(:func:`lmms_probe_tasks.data.sampling.seeded_rng`; the stratified shuffle uses
``[builder_seed, task_salt, 2]``), and this module's own text stream is
``[builder_seed, TEXT_SALT, 0]``. The probe tasks build their documents with the seed of
their YAML (0): as long as it stays below :data:`TRAIN_SEED_BASE` (``2**30``), no training
stream is ever a probe stream, whatever the document counts, and no training scene is
ever a probe document's scene (``tests/test_tiny_trained.py`` checks both).

Each entailment scene gives seven examples (:func:`scene_examples`): its caption, its three
statements (one per label, in the probe task's prompt, answers ``yes`` / ``maybe`` / ``no``)
and three short questions; each objects scene four (caption and questions). A caption
lists the visible shapes as ``kind colour`` in a random order, so the distribution of its
first token (one distinct token per kind) is spread over exactly the kinds in view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmms_probe_tasks.data.shapes import (
    CONTRADICTION,
    ENTAILMENT,
    NEUTRAL,
    EntailmentRecord,
    entailment_records,
    object_records,
)
from lmms_probe_tasks.data.shapes_scenes import COLOURS, GRID, SHAPE_KINDS, Scene, pick

#: The smallest builder seed of a training scene; the probe tasks' YAML seeds must stay below it.
TRAIN_SEED_BASE = 1 << 30
#: Largest model seed: keeps every builder seed a single 32-bit word in ``[2**30, 2**31)``.
MAX_TRAIN_SEED = (1 << 30) - 1
#: Salt of the training texts' stream (the shapes builders' task salts are 0 and 1).
TEXT_SALT = 7
#: Image side the scenes are drawn at: the probe tasks' default (``image_size: 64``).
TRAIN_IMAGE_SIZE = 64

#: The probe tasks' prompts (task_yamls/probe_shapes_*.yaml), so the probed position is
#: the one the model was trained to answer from.
ENTAILMENT_PROMPT = "Statement: {text}\nDoes the image show that the statement is true, false, or can it not be told?"
CAPTION_PROMPT = "Describe the shapes in this image."
EXISTS_PROMPT = "Is there a {kind}?"
COLOUR_PROMPT = "What colour is the {kind}?"
#: Example groups: entailment statements, captions, short questions.
STATEMENT, CAPTION, QUESTION = range(3)
#: The answer to each entailment label (each starts with its own token).
ANSWERS: dict[int, str] = {ENTAILMENT: "yes", NEUTRAL: "maybe", CONTRADICTION: "no"}


@dataclass(frozen=True)
class TrainingSet:
    """Tokenised training examples over rendered scenes.

    Attributes:
        pixel_values: ``(n_scenes, 3, H, W)`` float32, the processor's output per scene.
        input_ids: One int64 ``(length,)`` tensor per example: prompt (image tokens
            expanded) + answer + EOS.
        prompt_lengths: Per example, the number of prompt tokens (not trained on).
        scene_index: Per example, the row of ``pixel_values`` it shows (int64 ``(n_examples,)``).
        group: Per example, :data:`STATEMENT`, :data:`CAPTION` or :data:`QUESTION` (int64 ``(n_examples,)``).
        cell_content: ``(n_scenes, n_patches)`` int64, what each image patch (row-major)
            shows: 0 nothing, ``1 + k`` a visible shape of kind ``SHAPE_KINDS[k]``, 7 the curtain.
        cell_colour: ``(n_scenes, n_patches)`` int64, the index into ``COLOURS`` of a
            patch's visible shape, -100 (ignored by the loss) where there is none.
    """

    pixel_values: Any
    input_ids: list[Any]
    prompt_lengths: list[int]
    scene_index: Any
    group: Any
    cell_content: Any
    cell_colour: Any


#: Classes of :attr:`TrainingSet.cell_content`: nothing, one per shape kind, the curtain.
CELL_CLASSES = 1 + len(SHAPE_KINDS) + 1


def builder_seed(seed: int) -> int:
    """The shapes builders' seed for the training scenes of model seed ``seed``.

    Args:
        seed: The model seed, ``0 <= seed <= MAX_TRAIN_SEED``.

    Returns:
        ``TRAIN_SEED_BASE + seed``.

    Raises:
        ValueError: If ``seed`` is out of range.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_TRAIN_SEED:
        raise ValueError(f"seed must be an int in [0, {MAX_TRAIN_SEED}] for a trained checkpoint (got {seed!r})")
    return TRAIN_SEED_BASE + seed


def training_scenes(seed: int, n_entailment: int, n_objects: int) -> tuple[list[EntailmentRecord], list[Scene]]:
    """Sample the training scenes: entailment statements (three per scene) and open scenes.

    Args:
        seed: The model seed (see :func:`builder_seed`).
        n_entailment: Entailment scenes (each gives three statements, one per label).
        n_objects: Objects scenes (no curtain).

    Returns:
        The entailment records (scene-major, ``3 * n_entailment``) and the objects scenes.
    """
    shapes_seed = builder_seed(seed)
    # n_test=1 is the builders' minimum; only the "train" split's records are used.
    records = [r for r in entailment_records(3 * n_entailment, 1, shapes_seed) if r.probe_split == "train"]
    records.sort(key=lambda r: r.uid)
    objects = [r.scene for r in object_records(n_objects, 1, shapes_seed) if r.probe_split == "train"]
    objects.sort(key=lambda s: s.scene_id)
    return records, objects


def caption(rng: np.random.Generator, scene: Scene) -> str:
    """List the visible shapes of ``scene`` as ``kind colour``, in a random order.

    Args:
        rng: The caption-order stream.
        scene: The scene.

    Returns:
        E.g. ``"star blue, circle red."``.
    """
    visible = scene.visible
    order = rng.permutation(len(visible))
    return ", ".join(f"{visible[i].kind} {visible[i].colour}" for i in order) + "."


def _overlap(box: tuple[float, float, float, float], cell: tuple[float, float, float, float]) -> float:
    """Area of the intersection of two ``(x0, y0, x1, y1)`` boxes (fractions of the image side)."""
    width = min(box[2], cell[2]) - max(box[0], cell[0])
    height = min(box[3], cell[3]) - max(box[1], cell[1])
    return max(width, 0.0) * max(height, 0.0)


def _curtain_box(scene: Scene) -> tuple[float, float, float, float] | None:
    """The curtain band as an ``(x0, y0, x1, y1)`` box in fractions of the image side, or None."""
    if scene.curtain is None:
        return None
    axis, band = scene.curtain
    lo, hi = band / GRID, (band + 1) / GRID
    return (0.0, lo, 1.0, hi) if axis == "row" else (lo, 0.0, hi, 1.0)


def patch_targets(scenes: list[Scene], patches: int) -> tuple[Any, Any]:
    """What each image patch of each scene shows: the vision tower's pretraining targets.

    A patch shows the visible shape whose bounding box covers most of it (at least a
    tenth of it), else the curtain if that covers half of it, else nothing.

    Args:
        scenes: The scenes.
        patches: Patches per image side (the image has ``patches ** 2``, row-major).

    Returns:
        ``(content, colour)``, each ``(len(scenes), patches ** 2)`` int64 (see :class:`TrainingSet`).
    """
    import torch

    content = torch.zeros((len(scenes), patches * patches), dtype=torch.long)
    colour = torch.full((len(scenes), patches * patches), -100, dtype=torch.long)
    area = 1.0 / patches**2
    for i, scene in enumerate(scenes):
        curtain = _curtain_box(scene)
        for p in range(patches * patches):
            row, col = divmod(p, patches)
            cell = (col / patches, row / patches, (col + 1) / patches, (row + 1) / patches)
            cover, shape = max(((_overlap(s.box, cell), s) for s in scene.visible), key=lambda t: t[0])
            if cover >= 0.1 * area:
                content[i, p] = 1 + SHAPE_KINDS.index(shape.kind)
                colour[i, p] = COLOURS.index(shape.colour)
            elif curtain is not None and _overlap(curtain, cell) >= 0.5 * area:
                content[i, p] = CELL_CLASSES - 1
    return content, colour


def _prompt_ids(processor: Any, text: str, image_tokens: int) -> list[int]:
    """Token ids of the chat-templated prompt, the image placeholder expanded as the processor does."""
    content = [{"type": "image"}, {"type": "text", "text": text}]
    prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    image_token = processor.image_token
    return list(processor.tokenizer(prompt.replace(image_token, image_token * image_tokens)).input_ids)


def _answer_ids(processor: Any, answer: str) -> list[int]:
    """Token ids of ``" " + answer`` followed by EOS."""
    tokenizer = processor.tokenizer
    return [*tokenizer(" " + answer, add_special_tokens=False).input_ids, tokenizer.eos_token_id]


def scene_examples(
    rng: np.random.Generator, scene: Scene, records: list[EntailmentRecord]
) -> list[tuple[int, str, str]]:
    """The examples of one scene: its caption, its statements, two yes/no questions and a colour question.

    Args:
        rng: The training texts' stream.
        scene: The scene.
        records: Its entailment statements (none for an objects scene).

    Returns:
        ``(group, prompt text, answer)`` per example; ``group`` is one of
        :data:`STATEMENT`, :data:`CAPTION`, :data:`QUESTION`.
    """
    examples = [(CAPTION, CAPTION_PROMPT, caption(rng, scene))]
    examples += [(STATEMENT, ENTAILMENT_PROMPT.format(text=r.text), ANSWERS[r.label]) for r in records]
    unseen = [kind for kind in SHAPE_KINDS if kind not in scene.visible_kinds]
    # A kind out of view may be behind the curtain: as in the entailment task, "maybe".
    examples.append((QUESTION, EXISTS_PROMPT.format(kind=pick(rng, scene.visible).kind), "yes"))
    examples.append((QUESTION, EXISTS_PROMPT.format(kind=pick(rng, unseen)), "maybe" if scene.curtain else "no"))
    shape = pick(rng, scene.visible)
    examples.append((QUESTION, COLOUR_PROMPT.format(kind=shape.kind), shape.colour))
    return examples


def build_training_set(processor: Any, seed: int, n_entailment: int, n_objects: int, image_tokens: int) -> TrainingSet:
    """Sample, render and tokenise the training examples of model seed ``seed``.

    Args:
        processor: The tiny LLaVA processor (tokenizer, chat template, image processor).
        seed: The model seed (see :func:`builder_seed`).
        n_entailment: Entailment scenes (seven examples each, see :func:`scene_examples`).
        n_objects: Objects scenes (four examples each).
        image_tokens: Image positions per prompt (a square number).

    Returns:
        The training set; examples are in a fixed order (entailment scenes, then objects).
    """
    import torch

    records, objects = training_scenes(seed, n_entailment, n_objects)
    rng = np.random.default_rng([builder_seed(seed), TEXT_SALT, 0])
    by_scene: dict[str, list[EntailmentRecord]] = {}
    for record in records:
        by_scene.setdefault(record.scene.scene_id, []).append(record)
    scenes = [group[0].scene for group in by_scene.values()] + objects
    prompts: dict[str, list[int]] = {}
    ids: list[Any] = []
    prompt_lengths: list[int] = []
    scene_index: list[int] = []
    groups: list[int] = []
    for index, scene in enumerate(scenes):
        for group, text, answer in scene_examples(rng, scene, by_scene.get(scene.scene_id, [])):
            if text not in prompts:
                prompts[text] = _prompt_ids(processor, text, image_tokens)
            ids.append(torch.tensor(prompts[text] + _answer_ids(processor, answer), dtype=torch.long))
            prompt_lengths.append(len(prompts[text]))
            scene_index.append(index)
            groups.append(group)
    images = [scene.render(TRAIN_IMAGE_SIZE) for scene in scenes]
    pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"].to(torch.float32)
    content, colour = patch_targets(scenes, math.isqrt(image_tokens))
    return TrainingSet(
        pixel_values=pixels,
        input_ids=ids,
        prompt_lengths=prompt_lengths,
        scene_index=torch.tensor(scene_index, dtype=torch.long),
        group=torch.tensor(groups, dtype=torch.long),
        cell_content=content,
        cell_colour=colour,
    )
