"""The optimisation loops of the trained tiny LLaVA: vision pretraining, language phases, their losses.

Pure torch on a :class:`~lmms_probe_tasks.tiny.trained_data.TrainingSet`; the sizes and
settings come from a :class:`~lmms_probe_tasks.tiny.trained.Recipe`. Every random draw
goes through a seeded ``torch.Generator`` (or the seeded global generator inside
:func:`train`), so the same seed gives the same weights, bit for bit, on one thread.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loguru import logger

from lmms_probe_tasks.data.shapes_scenes import COLOURS
from lmms_probe_tasks.tiny.common import seeded
from lmms_probe_tasks.tiny.trained_data import CELL_CLASSES, TrainingSet

if TYPE_CHECKING:  # annotations only: trained imports this module
    from lmms_probe_tasks.tiny.trained import Phase, Recipe


def _learning_rate(recipe: Recipe, step: int, steps: int) -> float:
    """Linear warm-up to the peak, then cosine decay to 10 % of it at ``steps``."""
    warmup = min(recipe.warmup_steps, max(steps // 10, 1))
    if step < warmup:
        return recipe.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup, 1)
    return recipe.learning_rate * (0.1 + 0.45 * (1.0 + math.cos(math.pi * progress)))


def _step(optimizer: Any, params: list[Any], loss: Any, lr: float) -> float:
    """One AdamW step at learning rate ``lr`` with gradient clipping; returns the loss."""
    import torch

    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    return float(loss.detach())


def _log(stage: str, step: int, steps: int, losses: list[float], start: float) -> None:
    """Log the mean loss of the last 100 steps every 100 steps and at the end."""
    if (step + 1) % 100 == 0 or step + 1 == steps:
        recent = losses[-100:]
        logger.info(
            f"tiny trained llava, {stage}: step {step + 1}/{steps}, loss {sum(recent) / len(recent):.3f} "
            f"({time.perf_counter() - start:.0f} s)"
        )


def image_features(model: Any, pixel_values: Any) -> Any:
    """The projected image tokens the decoder sees, ``(n_images, image_tokens, text_hidden)`` float32.

    Args:
        model: The LLaVA model.
        pixel_values: ``(n_images, 3, 30, 30)`` float32.

    Returns:
        The projector's output per image token.
    """
    import torch

    out = model.model.get_image_features(
        pixel_values=pixel_values,
        vision_feature_layer=model.config.vision_feature_layer,
        vision_feature_select_strategy=model.config.vision_feature_select_strategy,
    )
    out = getattr(out, "pooler_output", out)
    return torch.stack(list(out)) if isinstance(out, (list, tuple)) else out


def pretrain_vision(model: Any, data: TrainingSet, recipe: Recipe, seed: int, steps: int) -> list[float]:
    """Stage 1: train the vision tower and projector to label each image token's cell.

    Args:
        model: The LLaVA model; its image tokens must be the grid cells (``patch_size`` 10).
        data: The training set (its pixels and cell targets).
        recipe: Batch size and learning-rate schedule.
        seed: Seed of the head's initialisation and of the image sampler.
        steps: Optimiser steps.

    Returns:
        The loss of every step.
    """
    import torch

    head = torch.nn.Linear(model.config.text_config.hidden_size, CELL_CLASSES + len(COLOURS))
    torch.nn.init.normal_(head.weight, std=0.02)
    torch.nn.init.zeros_(head.bias)
    params = [
        *model.model.vision_tower.parameters(),
        *model.model.multi_modal_projector.parameters(),
        *head.parameters(),
    ]
    optimizer = torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    sampler = torch.Generator().manual_seed(seed)
    cross_entropy = torch.nn.CrossEntropyLoss(ignore_index=-100)
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(steps):
        rows = torch.randint(len(data.pixel_values), (recipe.vision_batch_size,), generator=sampler)
        logits = head(image_features(model, data.pixel_values[rows]))
        content = logits[..., :CELL_CLASSES].reshape(-1, CELL_CLASSES)
        colour = logits[..., CELL_CLASSES:].reshape(-1, len(COLOURS))
        loss = cross_entropy(content, data.cell_content[rows].reshape(-1)) + cross_entropy(
            colour, data.cell_colour[rows].reshape(-1)
        )
        losses.append(_step(optimizer, params, loss, _learning_rate(recipe, step, steps)))
        _log("vision", step, steps, losses, start)
    return losses


def make_batch(data: TrainingSet, rows: list[int], pad_id: int) -> tuple[dict[str, Any], Any, Any]:
    """Right-padded model inputs for the examples ``rows``, with each answer token's target and weight.

    Args:
        data: The training set.
        rows: Indices of the examples.
        pad_id: The padding token id.

    Returns:
        The forward inputs (``input_ids``, ``attention_mask``, ``pixel_values``); the
        next-token targets, int64 ``(batch, length - 1)``, -100 off the answers; their
        float32 weights: the first answer token of every example weighs 1 and the rest
        of its answer 1 in all, so every example counts the same and its first answer
        token (the one the probed position predicts) as much as the rest.
    """
    import torch

    length = max(len(data.input_ids[i]) for i in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), length), dtype=torch.long)
    targets = torch.full((len(rows), length - 1), -100, dtype=torch.long)
    weights = torch.zeros((len(rows), length - 1))
    for j, i in enumerate(rows):
        ids, n, start = data.input_ids[i], len(data.input_ids[i]), data.prompt_lengths[i]
        input_ids[j, :n] = ids
        attention[j, :n] = 1
        # Position t predicts token t + 1: the answer tokens start..n-1 are predicted at start-1..n-2.
        targets[j, start - 1 : n - 1] = ids[start:]
        weights[j, start - 1] = 1.0
        weights[j, start : n - 1] = 1.0 / max(n - 1 - start, 1)
    pixels = data.pixel_values[data.scene_index[rows]]
    inputs = {"input_ids": input_ids, "attention_mask": attention, "pixel_values": pixels}
    return inputs, targets, weights


def answer_loss(model: Any, inputs: dict[str, Any], targets: Any, weights: Any) -> Any:
    """The weighted next-token cross-entropy of the answers (see :func:`make_batch`), a scalar tensor.

    Args:
        model: The LLaVA model.
        inputs: The forward inputs.
        targets: The next-token targets.
        weights: Their weights.

    Returns:
        The loss.
    """
    import torch

    # The vocabulary projection only where an answer token is predicted (a fifth of the cost otherwise).
    hidden = model.model(**inputs, use_cache=False).last_hidden_state[:, :-1]
    where = targets >= 0
    token_loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[where]), targets[where], reduction="none")
    return (token_loss * weights[where]).sum() / weights.sum()


def train_language(
    model: Any,
    data: TrainingSet,
    recipe: Recipe,
    phase: Phase,
    seed: int,
    pad_id: int,
    callback: Callable[[int], None] | None = None,
) -> list[float]:
    """Stage 2: train the decoder on the answers' next-token loss, one phase (the vision side is frozen).

    Args:
        model: The LLaVA model (float32).
        data: The training examples.
        recipe: Learning-rate schedule and weight decay.
        phase: Steps, batch size and the share of each example group.
        seed: Seed of the example sampler.
        pad_id: The padding token id.
        callback: Called with the step number after every step (diagnostics).

    Returns:
        The loss of every step.
    """
    import torch

    members = [torch.nonzero(data.group == group).flatten() for group in range(len(phase.shares))]
    sizes = [round(phase.batch_size * share) for share in phase.shares]
    # The pretrained vision tower and projector stay as they are (as in LLaVA's
    # instruction tuning): the decoder's early, large gradients would wreck them.
    params = list(model.model.language_model.parameters()) + list(model.lm_head.parameters())
    frozen = [*model.model.vision_tower.parameters(), *model.model.multi_modal_projector.parameters()]
    for param in frozen:
        param.requires_grad_(False)
    optimizer = torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    sampler = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(phase.steps):
        # One padded sub-batch per group (their lengths differ a lot), weighted by its share.
        loss = sum(
            answer_loss(model, *make_batch(data, draw(rows, size, sampler), pad_id)) * (size / phase.batch_size)
            for rows, size in zip(members, sizes, strict=True)
            if size
        )
        losses.append(_step(optimizer, params, loss, _learning_rate(recipe, step, phase.steps)))
        _log(phase.name, step, phase.steps, losses, start)
        if callback is not None:
            callback(step)
    for param in frozen:
        param.requires_grad_(True)
    return losses


def draw(rows: Any, size: int, sampler: Any) -> list[int]:
    """``size`` of ``rows`` drawn uniformly with replacement from the seeded ``sampler``."""
    import torch

    return rows[torch.randint(len(rows), (size,), generator=sampler)].tolist()


def train(
    model: Any, data: TrainingSet, recipe: Recipe, seed: int, pad_id: int, callback: Callable[[int], None] | None = None
) -> None:
    """Run both stages on ``model`` in place: vision pretraining, then every language phase.

    Args:
        model: The freshly initialised LLaVA model (float32).
        data: The training set.
        recipe: The recipe.
        seed: Seed of the samplers (and of the vision head's initialisation).
        pad_id: The padding token id.
        callback: Called with the step number after every language step (diagnostics).
    """
    import torch

    model.train()
    with seeded(seed), torch.autograd.set_grad_enabled(True):
        pretrain_vision(model, data, recipe, seed, recipe.vision_steps)
        for index, phase in enumerate(recipe.phases):
            train_language(model, data, recipe, phase, seed + 1 + index, pad_id, callback)
    model.eval()
