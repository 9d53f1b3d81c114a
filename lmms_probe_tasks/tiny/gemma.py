"""Build the tiny Gemma-family checkpoints: PaliGemma (prefix-LM, no chat template) and Gemma 3."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lmms_probe_tasks.tiny.checkpoint import Checkpoint
from lmms_probe_tasks.tiny.common import (
    IMAGE_SIZE,
    PATCH_SIZE,
    TEXT_HEAD_DIM,
    TEXT_HIDDEN_SIZE,
    TEXT_NUM_LAYERS,
    decoder_sizes,
    init_model,
    siglip_vision_config,
)
from lmms_probe_tasks.tiny.templates import GEMMA3_CHAT_TEMPLATE
from lmms_probe_tasks.tiny.tokenizer import build_tokenizer

#: Gemma special tokens in the Gemma tokenizer's order (pad 0, eos 1, bos 2, unk 3).
GEMMA_SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<eos>", "<bos>", "<unk>")
GEMMA3_TOKENS: tuple[str, ...] = (
    *GEMMA_SPECIAL_TOKENS,
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
)
GEMMA3_TILE_SIZE = 24
GEMMA3_MM_TOKENS_PER_IMAGE = 4


def _tokenizer(special_tokens: Sequence[str], chat_template: str | None, **named: str) -> Any:
    """Gemma-style tokenizer; the BOS is written by the chat template or the processor, never added.

    Args:
        special_tokens: Tokens given the first ids (:data:`GEMMA_SPECIAL_TOKENS` first).
        chat_template: Jinja chat template, or ``None``.
        **named: Named extra tokens exposed as tokenizer attributes.

    Returns:
        A ``transformers.PreTrainedTokenizerFast``.
    """
    return build_tokenizer(
        special_tokens,
        bos_token="<bos>",
        add_bos=False,
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        chat_template=chat_template,
        extra_special_tokens=dict(named) or None,
    )


def _text_kwargs(tokenizer: Any) -> dict[str, Any]:
    """Gemma text-config fields: the shared decoder sizes plus an explicit head size."""
    return {**decoder_sizes(tokenizer), "head_dim": TEXT_HEAD_DIM}


def paligemma(seed: int) -> Checkpoint:
    """PaliGemmaForConditionalGeneration (SigLIP + Gemma, prefix-LM attention) + PaliGemmaProcessor.

    No chat template: the real PaliGemma checkpoints have none; the prompt is the task
    text with ``<image>`` in front, and the processor adds ``<bos>`` after the image
    tokens and a newline at the end.

    Args:
        seed: Torch seed for the random weights.

    Returns:
        The checkpoint.
    """
    from transformers import (
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessor,
    )

    tokenizer = _tokenizer((*GEMMA_SPECIAL_TOKENS, "<image>"), None, image_token="<image>")
    image_processor = SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    image_processor.image_seq_length = (IMAGE_SIZE // PATCH_SIZE) ** 2
    # The processor adds PaliGemma's 1024 <locXXXX> + 128 <segXXX> tokens to the
    # tokenizer, so the vocabulary size is read after building it.
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = PaliGemmaConfig(
        vision_config=siglip_vision_config(IMAGE_SIZE, PATCH_SIZE),
        text_config=GemmaConfig(**_text_kwargs(tokenizer)),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vocab_size=len(tokenizer),
        projection_dim=TEXT_HIDDEN_SIZE,
        hidden_size=TEXT_HIDDEN_SIZE,
    )
    return Checkpoint(init_model(PaliGemmaForConditionalGeneration, config, seed), processor)


def gemma3(seed: int) -> Checkpoint:
    """Gemma3ForConditionalGeneration (SigLIP + avg-pooled projector + Gemma 3) + Gemma3Processor.

    Args:
        seed: Torch seed for the random weights.

    Returns:
        The checkpoint.
    """
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
        Gemma3TextConfig,
    )

    tokenizer = _tokenizer(
        GEMMA3_TOKENS,
        GEMMA3_CHAT_TEMPLATE,  # writes {{ bos_token }}
        boi_token="<start_of_image>",
        eoi_token="<end_of_image>",
        image_token="<image_soft_token>",
    )
    text_config = Gemma3TextConfig(
        **_text_kwargs(tokenizer),
        query_pre_attn_scalar=TEXT_HEAD_DIM,
        # Local (sliding) and global layers alternate as in the real model (5:1 there).
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"] * (TEXT_NUM_LAYERS // 2),
    )
    config = Gemma3Config(
        text_config=text_config,
        vision_config=siglip_vision_config(GEMMA3_TILE_SIZE, PATCH_SIZE),
        mm_tokens_per_image=GEMMA3_MM_TOKENS_PER_IMAGE,
        boi_token_index=tokenizer.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tokenizer.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image_soft_token>"),
    )
    model = init_model(Gemma3ForConditionalGeneration, config, seed)
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": GEMMA3_TILE_SIZE, "width": GEMMA3_TILE_SIZE}),
        tokenizer=tokenizer,
        image_seq_length=GEMMA3_MM_TOKENS_PER_IMAGE,
        chat_template=GEMMA3_CHAT_TEMPLATE,
    )
    return Checkpoint(model, processor)
