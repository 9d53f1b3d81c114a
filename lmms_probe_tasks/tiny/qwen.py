"""Build the tiny Qwen-VL checkpoints: Qwen2-VL, Qwen2.5-VL (windowed ViT) and Qwen3-VL (deepstack ViT)."""

from __future__ import annotations

from typing import Any

from lmms_probe_tasks.tiny.checkpoint import Checkpoint
from lmms_probe_tasks.tiny.common import (
    TEXT_HEAD_DIM,
    TEXT_HIDDEN_SIZE,
    VISION_HIDDEN_SIZE,
    VISION_INTERMEDIATE_SIZE,
    VISION_NUM_HEADS,
    VISION_NUM_LAYERS,
    decoder_sizes,
    init_model,
)
from lmms_probe_tasks.tiny.templates import QWEN2_VL_CHAT_TEMPLATE, QWEN3_VL_CHAT_TEMPLATE
from lmms_probe_tasks.tiny.tokenizer import qwen_tokenizer

# 6 px patches, 2x2 merged into one token, frames paired temporally (a still image is
# repeated). Images are resized to multiples of 12 px with an area between 24x24 and
# 48x48 px, i.e. 4 to 16 image tokens.
QWEN2_VL_PATCH_SIZE = 6
QWEN2_VL_MERGE_SIZE = 2
QWEN2_VL_TEMPORAL_PATCH_SIZE = 2
QWEN2_VL_IMAGE_TOKEN = "<|image_pad|>"
QWEN2_VL_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    QWEN2_VL_IMAGE_TOKEN,
    "<|video_pad|>",
)
#: M-RoPE splits the rotary half-dimension into (temporal, height, width) sections.
_MROPE_SECTION = [2, 1, 1]
if sum(_MROPE_SECTION) * 2 != TEXT_HEAD_DIM:
    raise RuntimeError(f"tiny qwen: mrope_section {_MROPE_SECTION} must sum to head_dim/2={TEXT_HEAD_DIM // 2}")


def _text_config(tokenizer: Any, **extra: Any) -> dict[str, Any]:
    """Text config dict of the Qwen*-VL decoders.

    Args:
        tokenizer: The Qwen-style tokenizer.
        **extra: Further text-config fields; ``rope_extra`` is merged into ``rope_parameters``.

    Returns:
        The text config as a plain dict.
    """
    sizes = decoder_sizes(tokenizer)
    sizes["bos_token_id"] = tokenizer.pad_token_id  # Qwen: <|endoftext|> doubles as BOS id in the config
    rope = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": list(_MROPE_SECTION)}
    rope.update(extra.pop("rope_extra", {}))
    return {**sizes, "rope_parameters": rope, **extra}


def _token_ids(tokenizer: Any) -> dict[str, int]:
    """The image/video token ids every Qwen*-VL config stores."""
    return {
        "image_token_id": tokenizer.convert_tokens_to_ids(QWEN2_VL_IMAGE_TOKEN),
        "video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    }


def _vision_patching() -> dict[str, int]:
    """Patch, merge and temporal sizes shared by the Qwen*-VL towers (as config fields)."""
    return {
        "patch_size": QWEN2_VL_PATCH_SIZE,
        "spatial_merge_size": QWEN2_VL_MERGE_SIZE,
        "temporal_patch_size": QWEN2_VL_TEMPORAL_PATCH_SIZE,
    }


def _vision_config(**extra: Any) -> dict[str, Any]:
    """Vision config dict of the Qwen2.5-VL / Qwen3-VL towers (the merger projects into the decoder).

    Args:
        **extra: Tower-specific fields.

    Returns:
        The vision config as a plain dict.
    """
    return {
        "depth": VISION_NUM_LAYERS,
        "hidden_size": VISION_HIDDEN_SIZE,
        "intermediate_size": VISION_INTERMEDIATE_SIZE,
        "num_heads": VISION_NUM_HEADS,
        "out_hidden_size": TEXT_HIDDEN_SIZE,
        **_vision_patching(),
        **extra,
    }


def _checkpoint(
    seed: int,
    classes: tuple[Any, Any, Any, Any],
    chat_template: str,
    vision_config: dict[str, Any],
    text_extra: dict[str, Any] | None = None,
) -> Checkpoint:
    """Assemble a Qwen*-VL checkpoint: tokenizer, config, model, image + video processors.

    Args:
        seed: Torch seed for the random weights.
        classes: The family's config, model, processor and video-processor classes.
        chat_template: The family's chat template.
        vision_config: The vision config as a plain dict.
        text_extra: Extra text-config fields (see :func:`_text_config`).

    Returns:
        The checkpoint.
    """
    from transformers import Qwen2VLImageProcessor

    config_class, model_class, processor_class, video_processor_class = classes
    tokenizer = qwen_tokenizer(QWEN2_VL_SPECIAL_TOKENS, chat_template)
    config = config_class(
        text_config=_text_config(tokenizer, **(text_extra or {})),
        vision_config=vision_config,
        **_token_ids(tokenizer),
    )
    model = init_model(model_class, config, seed)
    pixels = QWEN2_VL_PATCH_SIZE * QWEN2_VL_MERGE_SIZE  # one merged token's side: 12 px
    vision = {
        "patch_size": QWEN2_VL_PATCH_SIZE,
        "merge_size": QWEN2_VL_MERGE_SIZE,
        "temporal_patch_size": QWEN2_VL_TEMPORAL_PATCH_SIZE,
        "size": {"shortest_edge": (2 * pixels) ** 2, "longest_edge": (4 * pixels) ** 2},
    }
    processor = processor_class(
        image_processor=Qwen2VLImageProcessor(**vision),
        tokenizer=tokenizer,
        # Saved so AutoProcessor finds every sub-processor it expects when loading.
        video_processor=video_processor_class(**vision),
        chat_template=chat_template,
    )
    return Checkpoint(model, processor)


def qwen2_vl(seed: int) -> Checkpoint:
    """Qwen2VLForConditionalGeneration (ViT with 2x2 patch merger + M-RoPE decoder) + Qwen2VLProcessor.

    Args:
        seed: Torch seed for the random weights.

    Returns:
        The checkpoint.
    """
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor, Qwen2VLVideoProcessor

    vision_config = {
        "depth": VISION_NUM_LAYERS,
        "embed_dim": VISION_HIDDEN_SIZE,
        # The merger projects straight into the decoder's embedding space.
        "hidden_size": TEXT_HIDDEN_SIZE,
        "num_heads": VISION_NUM_HEADS,
        "mlp_ratio": VISION_INTERMEDIATE_SIZE // VISION_HIDDEN_SIZE,
        **_vision_patching(),
    }
    classes = (Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor, Qwen2VLVideoProcessor)
    return _checkpoint(seed, classes, QWEN2_VL_CHAT_TEMPLATE, vision_config)


def qwen2_5_vl(seed: int) -> Checkpoint:
    """Qwen2_5_VLForConditionalGeneration (windowed-attention ViT + M-RoPE decoder) + Qwen2_5_VLProcessor.

    Args:
        seed: Torch seed for the random weights.

    Returns:
        The checkpoint (Qwen2.5-VL-Instruct ships the Qwen2-VL chat template).
    """
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLVideoProcessor,
    )

    vision_config = _vision_config(
        # Windows of 2x2 merged tokens (24 px); the last block attends globally, as
        # every 8th block does in the real towers.
        window_size=2 * QWEN2_VL_PATCH_SIZE * QWEN2_VL_MERGE_SIZE,
        fullatt_block_indexes=[VISION_NUM_LAYERS - 1],
    )
    classes = (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2VLVideoProcessor)
    return _checkpoint(seed, classes, QWEN2_VL_CHAT_TEMPLATE, vision_config)


def qwen3_vl(seed: int) -> Checkpoint:
    """Qwen3VLForConditionalGeneration (deepstack ViT + interleaved M-RoPE decoder) + Qwen3VLProcessor.

    Args:
        seed: Torch seed for the random weights.

    Returns:
        The checkpoint.
    """
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor, Qwen3VLVideoProcessor

    vision_config = _vision_config(
        # Learned position table of 8x8 patches, interpolated to each image's grid.
        num_position_embeddings=64,
        # Deepstack: features of vision block 0 are added to the residual stream after
        # decoder layer 0 (the real towers tap 3 blocks into decoder layers 0-2).
        deepstack_visual_indexes=[0],
    )
    text_extra = {"head_dim": TEXT_HEAD_DIM, "rope_extra": {"mrope_interleaved": True}}
    classes = (Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor, Qwen3VLVideoProcessor)
    return _checkpoint(seed, classes, QWEN3_VL_CHAT_TEMPLATE, vision_config, text_extra)
