"""Build the tiny LLaVA *trained* offline on shapes scenes, deterministically from a seed (the recipe and the builder).

The result is the ``llava`` tiny checkpoint of :mod:`lmms_probe_tasks.tiny.llava` (same
``LlavaForConditionalGeneration`` + ``LlavaProcessor``, tokenizer and chat template) with
the sizes of :data:`RECIPE`: a 64-wide, 4-layer decoder, a 64-wide CLIP tower and 10 px
patches, so the 30 px image is exactly the 3 x 3 grid of the scenes, one image token per
cell (9 instead of 25). About 0.3 M parameters, 1.3 MB on disk. It is trained for about
2-2.5 minutes on one CPU thread (:mod:`lmms_probe_tasks.tiny.training`):

1. **Vision pretraining** (600 steps): the CLIP tower and the projector learn to label
   every image token with what its cell shows (nothing, a shape kind, the curtain) and
   the colour of its shape, through a linear head that is then thrown away.
2. **Language training**, vision side frozen: the decoder learns the next-token loss of
   the answers of :mod:`lmms_probe_tasks.tiny.trained_data`'s examples, first the short
   questions alone (300 steps: "Is there a star?", "What colour is the circle?"), then
   all of them (600 steps): entailment statements in the probe task's prompt (answers
   ``yes`` / ``maybe`` / ``no``), captions listing the visible shapes, questions.

The decoder and projector start from a wider initialisation than transformers' default
(``initializer_range`` 0.15 instead of 0.02): in the few steps there are, the questions
are learnt much faster from it. The setting is in the config, so the random-init twin
gets it too (it makes the twin's objects probe a bit weaker). Unlike the random tiny
checkpoints, the layers carry learned information about the scenes, so probing the model
gives a real per-layer curve above its random-init twin's (``init=random``). The training
scenes never coincide with the probe tasks' documents: their seeds lie in a range the
probe tasks do not use (see :mod:`lmms_probe_tasks.tiny.trained_data`). Same seed, same
steps: bit-identical weights (one thread, seeded samplers, no dropout).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from typing import Any

from loguru import logger

from lmms_probe_tasks.tiny import llava
from lmms_probe_tasks.tiny.checkpoint import Checkpoint
from lmms_probe_tasks.tiny.common import IMAGE_SIZE, init_model
from lmms_probe_tasks.tiny.trained_data import build_training_set, builder_seed
from lmms_probe_tasks.tiny.training import train


@dataclass(frozen=True)
class Phase:
    """One phase of the language training.

    Attributes:
        name: Shown in the log.
        steps: Optimiser steps.
        batch_size: Examples per step.
        shares: Share of each batch drawn from the entailment statements, the captions
            and the short questions (the groups of :mod:`~lmms_probe_tasks.tiny.trained_data`).
    """

    name: str
    steps: int
    batch_size: int
    shares: tuple[float, float, float]


@dataclass(frozen=True)
class Recipe:
    """Sizes and optimisation settings of the trained tiny LLaVA.

    Attributes:
        text_hidden_size: Width of the Llama decoder.
        text_intermediate_size: MLP width of the decoder.
        text_num_layers: Decoder layers (the probed stack has this many + 1 states).
        vision_hidden_size: Width of the CLIP vision tower (and of its projection).
        vision_intermediate_size: MLP width of the vision tower.
        vision_num_layers: Vision layers (the penultimate one feeds the projector).
        patch_size: Side of a vision patch in pixels; the 30 px image has
            ``(30 // patch_size) ** 2`` image tokens (10: one per cell of the 3 x 3 grid).
        text_init_std: Standard deviation of the initial decoder and projector weights
            (the config's ``initializer_range``).
        n_entailment_scenes: Curtain scenes (seven examples each, see
            :func:`~lmms_probe_tasks.tiny.trained_data.scene_examples`).
        n_object_scenes: Open scenes (four examples each).
        vision_steps: Optimiser steps of the vision pretraining.
        vision_batch_size: Images per vision step.
        phases: The phases of the language training, in order (each with a fresh
            optimiser and learning-rate schedule).
        learning_rate: Peak AdamW learning rate of both stages (linear warm-up, cosine
            decay to 10 %).
        warmup_steps: Steps of linear warm-up.
        weight_decay: AdamW weight decay.
    """

    text_hidden_size: int = 64
    text_intermediate_size: int = 128
    text_num_layers: int = 4
    vision_hidden_size: int = 64
    vision_intermediate_size: int = 128
    vision_num_layers: int = 2
    patch_size: int = 10
    text_init_std: float = 0.15
    n_entailment_scenes: int = 1500
    n_object_scenes: int = 1500
    vision_steps: int = 600
    vision_batch_size: int = 128
    phases: tuple[Phase, ...] = (
        Phase("questions", 300, 32, (0.0, 0.0, 1.0)),
        Phase("all", 600, 48, (0.4, 0.3, 0.3)),
    )
    learning_rate: float = 3e-3
    warmup_steps: int = 30
    weight_decay: float = 0.01


#: The recipe ``python -m lmms_probe_tasks.tiny llava DIR --trained`` uses.
RECIPE = Recipe()


def image_tokens(recipe: Recipe) -> int:
    """The number of ``<image>`` positions per image: one per patch of the 30 px image.

    Args:
        recipe: The recipe (its ``patch_size``).

    Returns:
        ``(30 // patch_size) ** 2``.
    """
    return (IMAGE_SIZE // recipe.patch_size) ** 2


def _config(base: Any, recipe: Recipe) -> Any:
    """The random tiny LLaVA's config with the recipe's sizes (everything else unchanged)."""
    config = copy.deepcopy(base)
    text, vision = config.text_config, config.vision_config
    text.hidden_size = recipe.text_hidden_size
    text.intermediate_size = recipe.text_intermediate_size
    text.num_hidden_layers = recipe.text_num_layers
    text.head_dim = recipe.text_hidden_size // text.num_attention_heads
    text.initializer_range = recipe.text_init_std
    vision.hidden_size = recipe.vision_hidden_size
    vision.intermediate_size = recipe.vision_intermediate_size
    vision.num_hidden_layers = recipe.vision_num_layers
    vision.projection_dim = recipe.vision_hidden_size
    vision.patch_size = recipe.patch_size
    config.image_seq_length = image_tokens(recipe)
    return config


def with_steps(recipe: Recipe, steps: int | None) -> Recipe:
    """``recipe`` with every stage and phase cut to ``steps`` optimiser steps (``None``: unchanged).

    Args:
        recipe: The recipe.
        steps: Steps of each stage and phase, >= 0, or ``None``.

    Returns:
        The recipe to train with.

    Raises:
        ValueError: If ``steps`` is negative.
    """
    if steps is None:
        return recipe
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(
            f"steps must be an int >= 0 (got {steps!r}); e.g. steps=5 for a quick run, None for the recipe"
        )
    return replace(recipe, vision_steps=steps, phases=tuple(replace(phase, steps=steps) for phase in recipe.phases))


def trained_llava(seed: int, steps: int | None = None, recipe: Recipe = RECIPE) -> Checkpoint:
    """The tiny LLaVA checkpoint, trained on shapes scenes.

    Args:
        seed: Seed of the initial weights, the training scenes and the sampling order.
        steps: Optimiser steps of each stage and phase instead of the recipe's; fewer
            make a quick, still deterministic run.
        recipe: Sizes and optimisation settings.

    Returns:
        The checkpoint (float32, eval mode).

    Raises:
        ValueError: If ``steps`` is negative or ``seed`` is out of range.
    """
    recipe = with_steps(recipe, steps)
    builder_seed(seed)  # refuse an out-of-range seed before any work
    base = llava.llava(seed)
    processor = base.processor
    processor.patch_size = recipe.patch_size
    model = init_model(type(base.model), _config(base.model.config, recipe), seed)
    start = time.perf_counter()
    data = build_training_set(processor, seed, recipe.n_entailment_scenes, recipe.n_object_scenes, image_tokens(recipe))
    logger.info(f"tiny trained llava: {len(data.input_ids)} examples in {time.perf_counter() - start:.0f} s")
    train(model, data, recipe, seed, processor.tokenizer.pad_token_id)
    return Checkpoint(model, processor, image_tokens=image_tokens(recipe))
