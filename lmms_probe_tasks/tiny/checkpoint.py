"""Run a freshly built tiny model and processor through one batched forward, then write them to disk."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Every builder (one function per architecture, in the family modules) has the same
# shape: lazy transformers imports, tokenizer, config, ``init_model``, processor,
# ``return Checkpoint(...)``; smoke check and save happen once, in :class:`Builder`.
# The duplicates tool reports those shared shapes between builders (and between
# same-shaped config calls such as T5Config / Kosmos2TextConfig, whose field names
# differ): they are the one builder style with each family's own values, not copied logic.


@dataclass(frozen=True)
class Checkpoint:
    """A tiny model and its processor, built in memory and not yet checked or saved.

    Attributes:
        model: The randomly initialised ``transformers`` model (float32, eval mode).
        processor: The matching ``transformers`` processor (tokenizer, chat template, ...).
        image_tokens: The number of image positions every prompt must get, whatever the
            image size (LLaVA-1.5: 25), or ``None`` where it varies with the image.
    """

    model: Any
    processor: Any
    image_tokens: int | None = None


def smoke_check(model: Any, processor: Any) -> list[int]:
    """Run the freshly built model on two differently sized images before saving.

    Catches processor/model disagreements (image-token count vs. image features,
    vocabulary size, chat template) at build time rather than in a user's test. The
    prompt layout, the extra forward inputs and where the language hidden states are
    come from :mod:`lmms_probe_tasks.extract.families`.

    Args:
        model: The model to run.
        processor: Its processor.

    Returns:
        The number of image positions in each prompt (Mllama: of ``<|image|>`` markers).

    Raises:
        RuntimeError: If the forward fails or returns the wrong number of hidden states.
    """
    import torch
    from PIL import Image

    from lmms_probe_tasks.extract import families

    family = families.lookup(model.config)
    prompts = [
        families.build_prompt(processor, family, "Is there a cat?"),
        families.build_prompt(processor, family, "Describe the colours."),
    ]
    # Non-square sizes exercise resizing/cropping/tiling; different sizes exercise batching.
    images = [[Image.new("RGB", (47, 31), (200, 30, 30))], [Image.new("RGB", (24, 60), (30, 30, 200))]]
    images = families.processor_images(family, images)
    batch = processor(images=images, text=prompts, padding=True, return_tensors="pt")
    try:
        with torch.no_grad():
            out = model(**families.forward_kwargs(model, family, batch), output_hidden_states=True)
    except Exception as err:  # re-raised with the context a builder author needs
        raise RuntimeError(f"tiny {model.config.model_type}: smoke forward failed: {err}") from err
    states = families.language_hidden_states(out, family)
    expected = model.config.get_text_config().num_hidden_layers + 1
    if len(states) != expected:
        raise RuntimeError(f"tiny {model.config.model_type}: got {len(states)} hidden states, expected {expected}")
    if family.image_positions == "cross_attention":  # Mllama: count the <|image|> markers instead
        return [int(n) for n in (batch["input_ids"] == model.config.image_token_id).sum(dim=1)]
    return [int(n) for n in families.image_positions(model.config, family, batch).sum(dim=1)]


@dataclass(frozen=True)
class Builder:
    """Writes one architecture's tiny checkpoint: ``builder(out_dir, seed)``.

    Attributes:
        make: Builds the :class:`Checkpoint` in memory from a torch seed.
    """

    make: Callable[[int], Checkpoint]

    def __call__(self, out_dir: Path, seed: int) -> None:
        """Build the checkpoint under ``seed``, smoke-check it and save it into ``out_dir``.

        Args:
            out_dir: Existing folder to write the model and processor files into.
            seed: Torch seed for the random weights.

        Raises:
            RuntimeError: If the smoke check fails, or the processor expands an image
                into another number of tokens than :attr:`Checkpoint.image_tokens`.
        """
        checkpoint = self.make(seed)
        model, processor = checkpoint.model, checkpoint.processor
        counts = smoke_check(model, processor)
        if checkpoint.image_tokens is not None and set(counts) != {checkpoint.image_tokens}:
            raise RuntimeError(
                f"tiny {model.config.model_type}: processor expands the image into {counts} tokens per prompt, "
                f"the model expects {checkpoint.image_tokens}; check patch_size / num_additional_image_tokens / "
                "crop_size"
            )
        model.save_pretrained(out_dir)
        processor.save_pretrained(out_dir)
