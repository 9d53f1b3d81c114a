"""Build the tiny Idefics3 and SmolVLM checkpoints (SigLIP-style tower, pixel-shuffle connector, image splitting)."""

from __future__ import annotations

from typing import Any

from lmms_probe_tasks.tiny.checkpoint import Checkpoint
from lmms_probe_tasks.tiny.common import decoder_sizes, init_model, vision_sizes
from lmms_probe_tasks.tiny.templates import IDEFICS3_CHAT_TEMPLATE, SMOLVLM_CHAT_TEMPLATE
from lmms_probe_tasks.tiny.tokenizer import build_tokenizer

# 24 px tiles of 6 px patches = 16 patches, pixel-shuffled by 2 into 4 image tokens per
# tile; images are split into up to 2x2 tiles of a 48 px resize, plus a global tile.
IDEFICS3_TILE_SIZE = 24
IDEFICS3_PATCH_SIZE = 6
IDEFICS3_SCALE_FACTOR = 2
IDEFICS3_IMAGE_SEQ_LEN = (IDEFICS3_TILE_SIZE // IDEFICS3_PATCH_SIZE) ** 2 // IDEFICS3_SCALE_FACTOR**2
IDEFICS3_TAG_TOKENS: tuple[str, ...] = (
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
    *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)),
)


def _sizes() -> dict[str, dict[str, int]]:
    """Resize and tile sizes of the image (and SmolVLM video) processors: 48 px, 24 px tiles."""
    return {"size": {"longest_edge": 2 * IDEFICS3_TILE_SIZE}, "max_image_size": {"longest_edge": IDEFICS3_TILE_SIZE}}


def _tokenizer(
    base_tokens: tuple[str, str, str], chat_template: str, *, bos_token: str, pad_token: str, **named: str
) -> Any:
    """Idefics3-recipe tokenizer: three base tokens, then the image tags; turns end at ``<end_of_utterance>``.

    Args:
        base_tokens: The BOS, end-of-text and pad tokens of the family's language model
            (ids 0-2, in the order the family's tokenizer lists them).
        chat_template: The family's chat template, which writes the BOS (never added).
        bos_token: The BOS (one of ``base_tokens``).
        pad_token: The padding token (one of ``base_tokens``).
        **named: Named extra tokens exposed as tokenizer attributes.

    Returns:
        A ``transformers.PreTrainedTokenizerFast``.
    """
    return build_tokenizer(
        (*base_tokens, *IDEFICS3_TAG_TOKENS),
        bos_token=bos_token,
        # The chat template writes the BOS (the Llama-3 tokenizer would add a second one).
        add_bos=False,
        eos_token="<end_of_utterance>",
        pad_token=pad_token,
        chat_template=chat_template,
        extra_special_tokens=dict(named) or None,
    )


def _model(seed: int, classes: tuple[Any, Any, Any], tokenizer: Any) -> Any:
    """The Idefics3-recipe model both families share: SigLIP-style tower, pixel shuffle, Llama decoder.

    Args:
        seed: Torch seed for the random weights.
        classes: The family's config, vision-config and model classes.
        tokenizer: The family's tokenizer.

    Returns:
        The model (float32, eval mode).
    """
    from transformers import LlamaConfig

    config_class, vision_config_class, model_class = classes
    config = config_class(
        vision_config=vision_config_class(**vision_sizes(IDEFICS3_TILE_SIZE, IDEFICS3_PATCH_SIZE)),
        text_config=LlamaConfig(**decoder_sizes(tokenizer)),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=IDEFICS3_SCALE_FACTOR,
    )
    return init_model(model_class, config, seed)


def idefics3(seed: int) -> Checkpoint:
    """Idefics3ForConditionalGeneration (SigLIP-style tower + pixel shuffle + Llama) + Idefics3Processor.

    Args:
        seed: Torch seed for the random weights.

    Returns:
        The checkpoint.
    """
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        Idefics3VisionConfig,
    )

    tokenizer = _tokenizer(
        ("<|begin_of_text|>", "<|end_of_text|>", "<pad>"),
        IDEFICS3_CHAT_TEMPLATE,
        bos_token="<|begin_of_text|>",
        pad_token="<pad>",
    )
    model = _model(seed, (Idefics3Config, Idefics3VisionConfig, Idefics3ForConditionalGeneration), tokenizer)
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessor(**_sizes(), do_image_splitting=True),
        tokenizer=tokenizer,
        image_seq_len=IDEFICS3_IMAGE_SEQ_LEN,
        chat_template=IDEFICS3_CHAT_TEMPLATE,
    )
    return Checkpoint(model, processor)


def smolvlm(seed: int) -> Checkpoint:
    """SmolVLMForConditionalGeneration (Idefics3 recipe, SmolLM2-style tokenizer) + SmolVLMProcessor.

    The processor needs the ``num2words`` package (transformers raises ImportError without it).

    Args:
        seed: Torch seed for the random weights.

    Returns:
        The checkpoint.
    """
    from transformers import (
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
        SmolVLMVisionConfig,
    )

    tokenizer = _tokenizer(
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        SMOLVLM_CHAT_TEMPLATE,
        bos_token="<|im_start|>",
        pad_token="<|im_end|>",
        image_token="<image>",
        fake_image_token="<fake_token_around_image>",
        global_image_token="<global-img>",
        end_of_utterance_token="<end_of_utterance>",
    )
    model = _model(seed, (SmolVLMConfig, SmolVLMVisionConfig, SmolVLMForConditionalGeneration), tokenizer)
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(**_sizes(), do_image_splitting=True),
        video_processor=SmolVLMVideoProcessor(**_sizes()),
        tokenizer=tokenizer,
        image_seq_len=IDEFICS3_IMAGE_SEQ_LEN,
        chat_template=SMOLVLM_CHAT_TEMPLATE,
    )
    return Checkpoint(model, processor)
