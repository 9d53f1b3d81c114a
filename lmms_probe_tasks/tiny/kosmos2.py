"""Build the tiny Kosmos-2 checkpoint: CLIP-style tower, latent queries, image slots marked by a position mask."""

from __future__ import annotations

from lmms_probe_tasks.tiny.checkpoint import Checkpoint
from lmms_probe_tasks.tiny.common import (
    IMAGE_SIZE,
    MAX_POSITIONS,
    PATCH_SIZE,
    TEXT_HIDDEN_SIZE,
    TEXT_INTERMEDIATE_SIZE,
    TEXT_NUM_HEADS,
    TEXT_NUM_LAYERS,
    clip_image_sizes,
    init_model,
    vision_sizes,
)
from lmms_probe_tasks.tiny.tokenizer import build_tokenizer

KOSMOS2_LATENT_QUERIES = 64  # the processor's fixed default number of image slots


def kosmos2(seed: int) -> Checkpoint:
    """Kosmos2ForConditionalGeneration + Kosmos2Processor.

    No chat template: microsoft/kosmos-2-patch14-224 has none; prompts are plain text
    (e.g. ``"<grounding>An image of"``) and the processor itself writes
    ``<image>`` + 64 placeholder ids + ``</image>`` after ``<s>``. The image slots are
    marked by ``image_embeds_position_mask``, not by a token id.

    Args:
        seed: Torch seed for the random weights.

    Returns:
        The checkpoint.
    """
    from transformers import (
        CLIPImageProcessor,
        Kosmos2Config,
        Kosmos2ForConditionalGeneration,
        Kosmos2Processor,
        Kosmos2TextConfig,
        Kosmos2VisionConfig,
    )

    # XLM-R order: <s> 0, <pad> 1, </s> 2, <unk> 3; the text model's sinusoidal
    # positions skip pad id 1, and the image placeholders are ids unk+1 ... unk+64.
    tokenizer = build_tokenizer(
        ("<s>", "<pad>", "</s>", "<unk>"),
        bos_token="<s>",
        add_bos=False,  # the processor writes <s> as text
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        chat_template=None,
    )
    # Adds the 11 tag tokens and 1024 <patch_index_XXXX> tokens: vocabulary read after.
    processor = Kosmos2Processor(image_processor=CLIPImageProcessor(**clip_image_sizes()), tokenizer=tokenizer)
    text_config = Kosmos2TextConfig(
        vocab_size=len(tokenizer),
        embed_dim=TEXT_HIDDEN_SIZE,
        layers=TEXT_NUM_LAYERS,
        ffn_dim=TEXT_INTERMEDIATE_SIZE,
        attention_heads=TEXT_NUM_HEADS,
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = Kosmos2Config(
        text_config=text_config,
        vision_config=Kosmos2VisionConfig(**vision_sizes(IMAGE_SIZE, PATCH_SIZE)),
        latent_query_num=KOSMOS2_LATENT_QUERIES,
    )
    return Checkpoint(init_model(Kosmos2ForConditionalGeneration, config, seed), processor)
