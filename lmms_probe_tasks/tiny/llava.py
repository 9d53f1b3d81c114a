"""Build the tiny LLaVA-family checkpoints: LLaVA-1.5, LLaVA-NeXT, LLaVA-NeXT-Video and LLaVA-OneVision."""

from __future__ import annotations

from typing import Any

from lmms_probe_tasks.tiny.checkpoint import Checkpoint
from lmms_probe_tasks.tiny.common import (
    IMAGE_SIZE,
    PATCH_SIZE,
    clip_image_sizes,
    clip_vision_config,
    decoder_sizes,
    init_model,
    llama_text_config,
    siglip_vision_config,
)
from lmms_probe_tasks.tiny.templates import (
    LLAVA_CHAT_TEMPLATE,
    LLAVA_NEXT_VIDEO_CHAT_TEMPLATE,
    LLAVA_ONEVISION_CHAT_TEMPLATE,
)
from lmms_probe_tasks.tiny.tokenizer import LLAMA_SPECIAL_TOKENS, llama_tokenizer, qwen_tokenizer

#: 30 px images of 6 px patches -> 5 x 5 = 25 patch features per image (the CLS feature
#: is dropped by vision_feature_select_strategy="default").
LLAVA_NUM_IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
LLAVA_IMAGE_TOKEN = "<image>"
# Special tokens come first in the vocabulary, so their ids are fixed whatever the
# corpus merges produce.
LLAVA_IMAGE_TOKEN_ID = LLAMA_SPECIAL_TOKENS.index(LLAVA_IMAGE_TOKEN)


def _pinpoints(*grids: tuple[int, int]) -> list[list[int]]:
    """The anyres tiling resolutions: ``(rows, cols)`` grids of 30 px tiles, in pixels."""
    return [[IMAGE_SIZE * rows, IMAGE_SIZE * cols] for rows, cols in grids]


def _clip_llama_config(tokenizer: Any) -> dict[str, Any]:
    """Config fields shared by the CLIP + Llama variants (llava, llava_next, llava_next_video).

    Args:
        tokenizer: The Llama-style tokenizer.

    Returns:
        Keyword arguments for the family's config class.
    """
    return {
        "vision_config": clip_vision_config(),
        "text_config": llama_text_config(tokenizer),
        # image_token_index is the stored field (image_token_id is its alias in
        # transformers 5); the processor writes this id into the expanded slots.
        "image_token_index": LLAVA_IMAGE_TOKEN_ID,
        "image_seq_length": LLAVA_NUM_IMAGE_TOKENS,
        "vision_feature_select_strategy": "default",
        # Penultimate CLIP layer, as in LLaVA-1.5; with 2 vision layers it is layer 1.
        "vision_feature_layer": -2,
    }


def _clip_processor_kwargs(tokenizer: Any, chat_template: str) -> dict[str, Any]:
    """Processor fields shared by the CLIP + Llama variants.

    Args:
        tokenizer: The Llama-style tokenizer.
        chat_template: The family's chat template.

    Returns:
        Keyword arguments for the family's processor class (all but the image/video processors).
    """
    return {
        "tokenizer": tokenizer,
        "patch_size": PATCH_SIZE,
        "vision_feature_select_strategy": "default",
        # CLIP prepends a CLS feature: +1 here and -1 for "default" selection leaves
        # exactly the 25 patch features the model scatters into the <image> slots.
        "num_additional_image_tokens": 1,
        "chat_template": chat_template,
    }


def llava(seed: int) -> Checkpoint:
    """LlavaForConditionalGeneration (CLIP vision tower + Llama decoder) + LlavaProcessor.

    Args:
        seed: Torch seed for the random weights.

    Returns:
        The checkpoint; every image expands to exactly 25 ``<image>`` tokens.
    """
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer = llama_tokenizer(LLAVA_CHAT_TEMPLATE, image_token=LLAVA_IMAGE_TOKEN)
    model = init_model(LlavaForConditionalGeneration, LlavaConfig(**_clip_llama_config(tokenizer)), seed)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(**clip_image_sizes()),
        **_clip_processor_kwargs(tokenizer, LLAVA_CHAT_TEMPLATE),
    )
    return Checkpoint(model, processor, image_tokens=LLAVA_NUM_IMAGE_TOKENS)


def llava_next(seed: int) -> Checkpoint:
    """LlavaNextForConditionalGeneration (LLaVA-1.6 "anyres" tiling) + LlavaNextProcessor.

    Same towers and tokenizer as ``llava``; images are tiled onto the best-fitting
    grid pinpoint (multiples of the 30 px base size), so the number of ``<image>``
    tokens varies with the image's aspect ratio, as in the real checkpoints.

    Args:
        seed: Torch seed for the random weights.

    Returns:
        The checkpoint.
    """
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    tokenizer = llama_tokenizer(LLAVA_CHAT_TEMPLATE, image_token=LLAVA_IMAGE_TOKEN)
    pinpoints = _pinpoints((1, 2), (2, 1), (2, 2))
    config = LlavaNextConfig(**_clip_llama_config(tokenizer), image_grid_pinpoints=pinpoints)
    model = init_model(LlavaNextForConditionalGeneration, config, seed)
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessor(**clip_image_sizes(), image_grid_pinpoints=pinpoints),
        **_clip_processor_kwargs(tokenizer, LLAVA_CHAT_TEMPLATE),
    )
    return Checkpoint(model, processor)


def llava_next_video(seed: int) -> Checkpoint:
    """LlavaNextVideoForConditionalGeneration (CLIP + Llama, anyres) + LlavaNextVideoProcessor.

    Images work exactly as in ``llava_next``; ``<video>`` is the video branch's token.

    Args:
        seed: Torch seed for the random weights.

    Returns:
        The checkpoint.
    """
    from transformers import (
        LlavaNextImageProcessor,
        LlavaNextVideoConfig,
        LlavaNextVideoForConditionalGeneration,
        LlavaNextVideoProcessor,
        LlavaNextVideoVideoProcessor,
    )

    tokenizer = llama_tokenizer(
        LLAVA_NEXT_VIDEO_CHAT_TEMPLATE, extra_tokens=("<video>",), image_token=LLAVA_IMAGE_TOKEN, video_token="<video>"
    )
    pinpoints = _pinpoints((1, 2), (2, 1), (2, 2))
    config = LlavaNextVideoConfig(
        **_clip_llama_config(tokenizer),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pinpoints,
        spatial_pool_stride=2,
    )
    model = init_model(LlavaNextVideoForConditionalGeneration, config, seed)
    processor = LlavaNextVideoProcessor(
        video_processor=LlavaNextVideoVideoProcessor(**clip_image_sizes()),
        image_processor=LlavaNextImageProcessor(**clip_image_sizes(), image_grid_pinpoints=pinpoints),
        **_clip_processor_kwargs(tokenizer, LLAVA_NEXT_VIDEO_CHAT_TEMPLATE),
    )
    return Checkpoint(model, processor)


def llava_onevision(seed: int) -> Checkpoint:
    """LlavaOnevisionForConditionalGeneration (SigLIP + Qwen2, anyres_max_9) + LlavaOnevisionProcessor.

    Args:
        seed: Torch seed for the random weights.

    Returns:
        The checkpoint.
    """
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        Qwen2Config,
    )

    tokenizer = qwen_tokenizer(
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"),
        LLAVA_ONEVISION_CHAT_TEMPLATE,
        image_token="<image>",
        video_token="<video>",
    )
    pinpoints = _pinpoints((1, 1), (1, 2), (2, 1), (2, 2))
    config = LlavaOnevisionConfig(
        vision_config=siglip_vision_config(IMAGE_SIZE, PATCH_SIZE),
        text_config=Qwen2Config(**decoder_sizes(tokenizer)),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pinpoints,
        # SigLIP has no CLS feature: keep every patch, as the real checkpoints do.
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
    )
    model = init_model(LlavaOnevisionForConditionalGeneration, config, seed)
    vision = {"size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(**vision, image_grid_pinpoints=pinpoints),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(**vision),
        num_image_tokens=LLAVA_NUM_IMAGE_TOKENS,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
    )
    return Checkpoint(model, processor)
