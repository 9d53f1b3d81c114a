"""Build the tiny Mllama (Llama 3.2 Vision) checkpoint: tiled vision encoder + cross-attention decoder layers."""

from __future__ import annotations

from lmms_probe_tasks.tiny.checkpoint import Checkpoint
from lmms_probe_tasks.tiny.common import (
    PATCH_SIZE,
    TEXT_NUM_LAYERS,
    VISION_HIDDEN_SIZE,
    decoder_sizes,
    init_model,
    vision_sizes,
)
from lmms_probe_tasks.tiny.templates import MLLAMA_CHAT_TEMPLATE
from lmms_probe_tasks.tiny.tokenizer import build_tokenizer

MLLAMA_TILE_SIZE = 24
MLLAMA_MAX_TILES = 2
MLLAMA_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|finetune_right_pad_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|image|>",
    "<|python_tag|>",
)


def mllama(seed: int) -> Checkpoint:
    """MllamaForConditionalGeneration (tiled ViT + cross-attention decoder) + MllamaProcessor.

    Args:
        seed: Torch seed for the random weights.

    Returns:
        The checkpoint.
    """
    from transformers import (
        MllamaConfig,
        MllamaForConditionalGeneration,
        MllamaImageProcessor,
        MllamaProcessor,
        MllamaTextConfig,
        MllamaVisionConfig,
    )

    tokenizer = build_tokenizer(
        MLLAMA_SPECIAL_TOKENS,
        bos_token="<|begin_of_text|>",
        add_bos=False,  # the chat template writes {{ bos_token }}
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
        chat_template=MLLAMA_CHAT_TEMPLATE,
        extra_special_tokens={"image_token": "<|image|>"},
    )
    # The shared ViT sizes; Mllama names the head count ``attention_heads``.
    vision = vision_sizes(MLLAMA_TILE_SIZE, PATCH_SIZE)
    vision["attention_heads"] = vision.pop("num_attention_heads")
    vision_config = MllamaVisionConfig(
        **vision,
        num_global_layers=1,
        max_num_tiles=MLLAMA_MAX_TILES,
        intermediate_layers_indices=[0],
        # (1 + len(intermediate_layers_indices)) * hidden_size
        vision_output_dim=2 * VISION_HIDDEN_SIZE,
        supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]],
    )
    text_sizes = decoder_sizes(tokenizer)
    text_sizes["num_hidden_layers"] = TEXT_NUM_LAYERS + 1  # one of them is a cross-attention layer
    config = MllamaConfig(
        vision_config=vision_config,
        text_config=MllamaTextConfig(**text_sizes, cross_attention_layers=[2]),
        image_token_index=tokenizer.convert_tokens_to_ids("<|image|>"),
    )
    model = init_model(MllamaForConditionalGeneration, config, seed)
    processor = MllamaProcessor(
        image_processor=MllamaImageProcessor(
            size={"height": MLLAMA_TILE_SIZE, "width": MLLAMA_TILE_SIZE}, max_image_tiles=MLLAMA_MAX_TILES
        ),
        tokenizer=tokenizer,
        chat_template=MLLAMA_CHAT_TEMPLATE,
    )
    return Checkpoint(model, processor)
