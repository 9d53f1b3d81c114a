"""Build the tiny InstructBLIP checkpoints: ViT + instruction-aware Q-Former + a LLaMA (Vicuna) or Flan-T5 LM."""

from __future__ import annotations

from typing import Any

from lmms_probe_tasks.tiny.checkpoint import Checkpoint
from lmms_probe_tasks.tiny.common import (
    IMAGE_SIZE,
    MAX_POSITIONS,
    PATCH_SIZE,
    TEXT_HEAD_DIM,
    TEXT_HIDDEN_SIZE,
    TEXT_INTERMEDIATE_SIZE,
    TEXT_NUM_HEADS,
    TEXT_NUM_LAYERS,
    VISION_HIDDEN_SIZE,
    VISION_INTERMEDIATE_SIZE,
    VISION_NUM_HEADS,
    init_model,
    llama_text_config,
    vision_sizes,
)
from lmms_probe_tasks.tiny.tokenizer import build_tokenizer, llama_tokenizer

INSTRUCTBLIP_QUERY_TOKENS = 8


def _qformer_tokenizer() -> Any:
    """BERT-style tokenizer for the Q-Former's instruction input ([CLS] prepended)."""
    return build_tokenizer(
        ("[PAD]", "[CLS]", "[SEP]", "[UNK]"),
        bos_token="[CLS]",
        eos_token="[SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        chat_template=None,
        padding_side="right",
    )


def _checkpoint(seed: int, tokenizer: Any, text_config: Any) -> Checkpoint:
    """Assemble an InstructBLIP checkpoint around the given language model.

    No chat template: the real InstructBLIP checkpoints have none; the prompt is the
    plain instruction and the processor prepends one ``<image>`` per query token.

    Args:
        seed: Torch seed for the random weights.
        tokenizer: The language model's tokenizer (with an ``<image>`` token).
        text_config: The language model's config.

    Returns:
        The checkpoint.
    """
    from transformers import (
        BlipImageProcessor,
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
        InstructBlipQFormerConfig,
        InstructBlipVisionConfig,
    )

    qformer_tokenizer = _qformer_tokenizer()
    config = InstructBlipConfig(
        # The config default initializer_range (1e-10) leaves a random tower's output all but constant.
        vision_config=InstructBlipVisionConfig(**vision_sizes(IMAGE_SIZE, PATCH_SIZE), initializer_range=0.02),
        qformer_config=InstructBlipQFormerConfig(
            vocab_size=len(qformer_tokenizer),
            hidden_size=VISION_HIDDEN_SIZE,
            num_hidden_layers=2,
            num_attention_heads=VISION_NUM_HEADS,
            intermediate_size=VISION_INTERMEDIATE_SIZE,
            max_position_embeddings=MAX_POSITIONS,
            pad_token_id=qformer_tokenizer.pad_token_id,
            cross_attention_frequency=1,
        ),
        text_config=text_config,
        num_query_tokens=INSTRUCTBLIP_QUERY_TOKENS,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    model = init_model(InstructBlipForConditionalGeneration, config, seed)
    processor = InstructBlipProcessor(
        image_processor=BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer,
        qformer_tokenizer=qformer_tokenizer,
        num_query_tokens=INSTRUCTBLIP_QUERY_TOKENS,
    )
    return Checkpoint(model, processor)


def instructblip(seed: int) -> Checkpoint:
    """InstructBlipForConditionalGeneration with a tiny LLaMA (Vicuna-style) decoder.

    Args:
        seed: Torch seed for the random weights.

    Returns:
        The checkpoint (Salesforce/instructblip-vicuna-7b has no chat template either).
    """
    # No image_token attribute on the tokenizer: InstructBlipProcessor then registers
    # "<image>" itself (transformers 5.24 breaks on a plain-string tokenizer.image_token).
    tokenizer = llama_tokenizer(None, padding_side="right")
    return _checkpoint(seed, tokenizer, llama_text_config(tokenizer))


def instructblip_t5(seed: int) -> Checkpoint:
    """InstructBlipForConditionalGeneration with a tiny Flan-T5-style encoder-decoder LM.

    The image and prompt go through the T5 *encoder*; the decoder only sees
    ``decoder_input_ids``.

    Args:
        seed: Torch seed for the random weights.

    Returns:
        The checkpoint (Salesforce/instructblip-flan-t5-xl has no chat template either).
    """
    from transformers import T5Config

    tokenizer = build_tokenizer(
        ("<pad>", "</s>", "<unk>", "<image>"),
        bos_token=None,
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        chat_template=None,
        add_eos=True,  # T5 appends </s>
        padding_side="right",
    )
    text_config = T5Config(
        vocab_size=len(tokenizer),
        d_model=TEXT_HIDDEN_SIZE,
        d_kv=TEXT_HEAD_DIM,
        d_ff=TEXT_INTERMEDIATE_SIZE,
        num_layers=TEXT_NUM_LAYERS,
        num_decoder_layers=2,
        num_heads=TEXT_NUM_HEADS,
        feed_forward_proj="gated-gelu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return _checkpoint(seed, tokenizer, text_config)
