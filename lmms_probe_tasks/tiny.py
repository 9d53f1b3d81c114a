"""Tiny, randomly initialised checkpoints of real image-text architectures, built offline (tests, CI, demo).

The architectures are real ``transformers`` model and processor classes; only the
sizes are tiny. :data:`BUILDERS` covers LLaVA, LLaVA-NeXT(-Video), LLaVA-OneVision,
Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Idefics3, SmolVLM, PaliGemma, Gemma 3, Mllama,
Kosmos-2 and InstructBLIP (Vicuna-style LLaMA and Flan-T5-style decoders). Each ships
a chat template exactly when the real checkpoints do (PaliGemma, Kosmos-2 and
InstructBLIP have none). How each family is prompted, batched and read out (where
its language hidden states are, which stack is probed, ...) is recorded in
:mod:`lmms_probe_tasks.families`; :data:`REQUIREMENTS` lists extra packages a
builder needs (SmolVLM: ``num2words``).

The weights are RANDOM: a tiny checkpoint exercises the real model classes,
processors, chat templates and ``output_hidden_states`` plumbing end to end in
milliseconds on a CPU, but any score computed from it is meaningless.

Everything is built locally (no model hub): the configs are written out with tiny
sizes, the model is instantiated from them under a fixed torch seed, and the
tokenizer is a byte-level BPE trained in memory on a small built-in English corpus,
so it encodes any text without unknown tokens.

Usage::

    python -m lmms_probe_tasks.tiny llava /tmp/tiny-llava --seed 0

    from lmms_probe_tasks.tiny import build_tiny
    path = build_tiny("llava", "/tmp/tiny-llava")
    model = transformers.AutoModelForImageTextToText.from_pretrained(path)
    processor = transformers.AutoProcessor.from_pretrained(path)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

# Shared tiny sizes. Small enough that a CPU forward of a batch of 8 takes
# milliseconds, large enough that every code path (multi-head attention, several
# decoder layers, a vision tower with a penultimate layer to select) is exercised.
TEXT_HIDDEN_SIZE = 32
TEXT_NUM_LAYERS = 4
TEXT_NUM_HEADS = 4
TEXT_INTERMEDIATE_SIZE = 64
VISION_HIDDEN_SIZE = 32
VISION_NUM_LAYERS = 2
VISION_NUM_HEADS = 4
VISION_INTERMEDIATE_SIZE = 64
#: Target size of the trained BPE vocabulary (bytes + merges + special tokens); the
#: built-in corpus may run out of merges first, the config always uses the real size.
BPE_VOCAB_SIZE = 768

# LLaVA: 30 px images cut into 6 px patches -> 5 x 5 = 25 patch features (the CLS
# feature is dropped by vision_feature_select_strategy="default").
LLAVA_IMAGE_SIZE = 30
LLAVA_PATCH_SIZE = 6
LLAVA_NUM_IMAGE_TOKENS = (LLAVA_IMAGE_SIZE // LLAVA_PATCH_SIZE) ** 2
LLAVA_IMAGE_TOKEN = "<image>"

# Special tokens come first in the vocabulary, so their ids are fixed whatever the
# corpus merges produce.
LLAVA_SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<s>", "</s>", LLAVA_IMAGE_TOKEN)
LLAVA_IMAGE_TOKEN_ID = LLAVA_SPECIAL_TOKENS.index(LLAVA_IMAGE_TOKEN)

#: LLaVA-1.5 prompt format ("USER: <image>\n{text} ASSISTANT:"). Content may be a plain
#: string or a list of {"type": "image"} / {"type": "text", "text": ...} parts; images
#: are rendered before the text, as in the llava-hf checkpoints.
LLAVA_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- if message['content'] is string -%}{{ message['content'] + ' ' }}"
    "{%- else -%}{%- for part in message['content'] if part['type'] == 'text' -%}{{ part['text'] + ' ' }}{%- endfor -%}"
    "{%- endif -%}"
    "{%- else -%}"
    "{{ message['role'].upper() + ': ' }}"
    "{%- if message['content'] is string -%}{{ message['content'] + ' ' }}"
    "{%- else -%}"
    "{%- for part in message['content'] if part['type'] == 'image' -%}{{ '<image>\n' }}{%- endfor -%}"
    "{%- for part in message['content'] if part['type'] == 'text' -%}{{ part['text'] + ' ' }}{%- endfor -%}"
    "{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)

# Qwen2-VL: 6 px patches, 2x2 merged into one token, frames paired temporally (a
# still image is repeated). Images are resized to multiples of 12 px with an area
# between 24x24 and 48x48 px, i.e. 4 to 16 image tokens.
QWEN2_VL_PATCH_SIZE = 6
QWEN2_VL_MERGE_SIZE = 2
QWEN2_VL_TEMPORAL_PATCH_SIZE = 2
QWEN2_VL_MIN_PIXELS = 24 * 24
QWEN2_VL_MAX_PIXELS = 48 * 48
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
#: The Qwen2-VL-Instruct chat template (default system prompt, ChatML turns, one
#: <|vision_start|><|image_pad|><|vision_end|> block per image, expanded by the processor).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Small English corpus about shapes, colours, objects and captions: only shapes the
# BPE merges (so common words become single tokens); coverage of arbitrary text comes
# from the byte-level alphabet, not from this list.
_CORPUS: tuple[str, ...] = (
    "A red circle is next to a blue square on a white background.",
    "There is a green triangle above a yellow rectangle.",
    "Is there a cat in the image? Yes, there is a cat on the sofa.",
    "Is there a dog in the picture? No, there is no dog.",
    "A small black cat sleeps on a brown wooden table.",
    "Two people are walking along the beach at sunset.",
    "A man is riding a bicycle down a busy city street.",
    "A woman holds an orange umbrella in the rain.",
    "The photo shows a bowl of fruit: apples, bananas and oranges.",
    "A large purple star and a small pink heart are drawn on paper.",
    "How many circles are in the image? There are three circles.",
    "What colour is the car? The car is red.",
    "A plane flies over snowy mountains under a clear blue sky.",
    "A child plays with a ball in a green park.",
    "The kitchen has a sink, an oven, a fridge and a window.",
    "A bird sits on a branch of a tall tree.",
    "A plate with pizza, a fork and a knife on the table.",
    "The train is stopped at the station next to the platform.",
    "A horse stands in a field near a fence.",
    "A laptop, a cup of coffee and a phone are on the desk.",
    "Describe the image. The image shows a grey square and a white circle.",
    "Does the image contain a boat? Yes, a boat is on the water.",
    "The left shape is bigger than the right shape.",
    "A stop sign stands at the corner of the road.",
    "Answer with yes or no. Is the triangle blue?",
    "A group of people sit around a table and eat dinner.",
    "The caption says: a cow and a sheep in a field of grass.",
    "An elephant and a giraffe walk across the dry plain.",
    "A bus, a truck and a motorcycle wait at a traffic light.",
    "A vase of flowers on a shelf beside some books.",
    "The hexagon is below the oval and left of the diamond.",
    "One, two, three, four, five, six, seven, eight, nine, ten.",
    "The entailment holds: the sentence is true of the picture.",
    "The hypothesis is false: the image does not show that.",
)


@contextlib.contextmanager
def _single_threaded() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore the caller's setting.

    The tiny models' matrices are a few dozen wide: extra threads only add
    synchronisation, which on a busy machine costs ~10x the work itself.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU RNG for model init without disturbing the caller's RNG state."""
    import torch

    # fork_rng restores the global generator afterwards, so building a tiny model in
    # the middle of a test does not change the random numbers the test draws next.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _build_tokenizer(
    special_tokens: Sequence[str],
    *,
    bos_token: str | None,
    eos_token: str,
    pad_token: str,
    chat_template: str | None,
    extra_special_tokens: dict[str, str] | None = None,
    unk_token: str | None = None,
    add_bos: bool | None = None,
    add_eos: bool = False,
    padding_side: str = "left",
) -> Any:
    """Train a byte-level BPE on the built-in corpus and wrap it for transformers.

    Args:
        special_tokens: Tokens given the first ids, in this order; never split.
        bos_token: Beginning-of-sequence token, or ``None`` (Qwen style: there is none).
        eos_token: End-of-sequence token (one of ``special_tokens``).
        pad_token: Padding token (one of ``special_tokens``).
        chat_template: Jinja chat template stored with the tokenizer, or ``None`` for
            families whose real checkpoints have none.
        extra_special_tokens: Named extra tokens (e.g. ``{"image_token": "<image>"}``)
            exposed as tokenizer attributes, which processors read.
        unk_token: Unknown token (one of ``special_tokens``); byte-level BPE never
            produces it, but some processors derive ids from it (Kosmos-2).
        add_bos: Prepend ``bos_token`` to every encoding (Llama style). Defaults to
            ``bos_token is not None``; ``False`` where the chat template or the
            processor writes the BOS itself (Gemma, PaliGemma, Kosmos-2).
        add_eos: Append ``eos_token`` to every encoding (T5 style).
        padding_side: The tokenizer's default padding side.

    Returns:
        A ``transformers.PreTrainedTokenizerFast``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Byte-level: every string maps onto the 256-symbol byte alphabet, so no input
    # ever becomes an unknown token; no prefix space keeps "USER:" prompts as written.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    if add_bos is None:
        add_bos = bos_token is not None
    if add_bos and bos_token is None:
        raise ValueError("add_bos=True needs a bos_token")
    if add_bos or add_eos:
        prefix = f"{bos_token} " if add_bos else ""
        suffix = f" {eos_token}" if add_eos else ""
        used = ([bos_token] if add_bos else []) + ([eos_token] if add_eos else [])
        tok.post_processor = processors.TemplateProcessing(
            single=f"{prefix}$A{suffix}",
            pair=f"{prefix}$A{suffix} {prefix}$B{suffix}",
            special_tokens=[(t, tok.token_to_id(t)) for t in dict.fromkeys(used)],
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)

    kwargs: dict[str, Any] = {}
    if extra_special_tokens:
        kwargs["extra_special_tokens"] = dict(extra_special_tokens)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos_token,
        eos_token=eos_token,
        pad_token=pad_token,
        unk_token=unk_token,
        chat_template=chat_template,
        # Left padding by default, as in the llava-hf checkpoints: batched decoder-only
        # inference then ends every row at its last real token.
        padding_side=padding_side,
        **kwargs,
    )
    # Guard what the configs rely on: each special token keeps the id it was given
    # (configs store e.g. image_token_id as a plain integer).
    for index, token in enumerate(special_tokens):
        if tokenizer.convert_tokens_to_ids(token) != index:
            raise RuntimeError(
                f"tiny tokenizer: special token {token!r} got id {tokenizer.convert_tokens_to_ids(token)}, "
                f"expected {index}; check the tokenizers version (trainer special_tokens ordering)"
            )
    return tokenizer


def _llava_tokenizer() -> Any:
    """Llama-style tokenizer (``<s>`` prepended) with the LLaVA-1.5 chat template."""
    return _build_tokenizer(
        LLAVA_SPECIAL_TOKENS,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        chat_template=LLAVA_CHAT_TEMPLATE,
        extra_special_tokens={"image_token": LLAVA_IMAGE_TOKEN},
    )


def _clip_vision_config() -> Any:
    """Tiny CLIP vision tower: 30 px images, 6 px patches, 2 layers."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=VISION_HIDDEN_SIZE,
        intermediate_size=VISION_INTERMEDIATE_SIZE,
        num_hidden_layers=VISION_NUM_LAYERS,
        num_attention_heads=VISION_NUM_HEADS,
        image_size=LLAVA_IMAGE_SIZE,
        patch_size=LLAVA_PATCH_SIZE,
        projection_dim=VISION_HIDDEN_SIZE,
    )


def _llama_text_config(tokenizer: Any) -> Any:
    """Tiny Llama decoder whose vocabulary is exactly the tokenizer's."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN_SIZE,
        intermediate_size=TEXT_INTERMEDIATE_SIZE,
        num_hidden_layers=TEXT_NUM_LAYERS,
        num_attention_heads=TEXT_NUM_HEADS,
        num_key_value_heads=TEXT_NUM_HEADS,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _build_llava(out_dir: Path, seed: int) -> None:
    """LlavaForConditionalGeneration (CLIP vision tower + Llama decoder) + LlavaProcessor."""
    import torch
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer = _llava_tokenizer()
    config = LlavaConfig(
        vision_config=_clip_vision_config(),
        text_config=_llama_text_config(tokenizer),
        # image_token_index is the stored field (image_token_id is its alias in
        # transformers 5); the processor writes this id into the expanded slots.
        image_token_index=LLAVA_IMAGE_TOKEN_ID,
        image_seq_length=LLAVA_NUM_IMAGE_TOKENS,
        vision_feature_select_strategy="default",
        # Penultimate CLIP layer, as in LLaVA-1.5; with 2 vision layers it is layer 1.
        vision_feature_layer=-2,
    )
    with _seeded(seed):
        model = LlavaForConditionalGeneration(config).to(torch.float32).eval()

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": LLAVA_IMAGE_SIZE},
        crop_size={"height": LLAVA_IMAGE_SIZE, "width": LLAVA_IMAGE_SIZE},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=LLAVA_PATCH_SIZE,
        vision_feature_select_strategy="default",
        # CLIP prepends a CLS feature: +1 here and -1 for "default" selection leaves
        # exactly the 25 patch features the model scatters into the <image> slots.
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    counts = _smoke_check(model, processor)
    if set(counts) != {LLAVA_NUM_IMAGE_TOKENS}:
        raise RuntimeError(
            f"tiny llava: processor expands {LLAVA_IMAGE_TOKEN!r} into {counts} tokens per prompt, the model "
            f"expects {LLAVA_NUM_IMAGE_TOKENS}; check patch_size / num_additional_image_tokens / crop_size"
        )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


def _build_llava_next(out_dir: Path, seed: int) -> None:
    """LlavaNextForConditionalGeneration (LLaVA-1.6 "anyres" tiling) + LlavaNextProcessor.

    Same towers and tokenizer as ``llava``; images are tiled onto the best-fitting
    grid pinpoint (multiples of the 30 px base size), so the number of ``<image>``
    tokens varies with the image's aspect ratio, as in the real checkpoints.
    """
    import torch
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    tokenizer = _llava_tokenizer()
    pinpoints = [[LLAVA_IMAGE_SIZE * h, LLAVA_IMAGE_SIZE * w] for h, w in ((1, 2), (2, 1), (2, 2))]
    config = LlavaNextConfig(
        vision_config=_clip_vision_config(),
        text_config=_llama_text_config(tokenizer),
        image_token_index=LLAVA_IMAGE_TOKEN_ID,
        image_seq_length=LLAVA_NUM_IMAGE_TOKENS,
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    with _seeded(seed):
        model = LlavaNextForConditionalGeneration(config).to(torch.float32).eval()

    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": LLAVA_IMAGE_SIZE},
        crop_size={"height": LLAVA_IMAGE_SIZE, "width": LLAVA_IMAGE_SIZE},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=LLAVA_PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    _smoke_check(model, processor)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


def _build_qwen2_vl(out_dir: Path, seed: int) -> None:
    """Qwen2VLForConditionalGeneration (ViT with 2x2 patch merger + M-RoPE decoder) + Qwen2VLProcessor."""
    import torch
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = _build_tokenizer(
        QWEN2_VL_SPECIAL_TOKENS,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN2_VL_SPECIAL_TOKENS}
    head_dim = TEXT_HIDDEN_SIZE // TEXT_NUM_HEADS
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": TEXT_HIDDEN_SIZE,
        "intermediate_size": TEXT_INTERMEDIATE_SIZE,
        "num_hidden_layers": TEXT_NUM_LAYERS,
        "num_attention_heads": TEXT_NUM_HEADS,
        "num_key_value_heads": TEXT_NUM_HEADS,
        "max_position_embeddings": 512,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        # M-RoPE splits the rotary half-dimension into (temporal, height, width)
        # sections; they must sum to head_dim / 2 = 4.
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 1, 1]},
    }
    if sum(text_config["rope_parameters"]["mrope_section"]) * 2 != head_dim:
        raise RuntimeError(f"tiny qwen2_vl: mrope_section must sum to head_dim/2={head_dim // 2}")
    vision_config = {
        "depth": VISION_NUM_LAYERS,
        "embed_dim": VISION_HIDDEN_SIZE,
        # The merger projects straight into the decoder's embedding space.
        "hidden_size": TEXT_HIDDEN_SIZE,
        "num_heads": VISION_NUM_HEADS,
        "mlp_ratio": VISION_INTERMEDIATE_SIZE // VISION_HIDDEN_SIZE,
        "patch_size": QWEN2_VL_PATCH_SIZE,
        "spatial_merge_size": QWEN2_VL_MERGE_SIZE,
        "temporal_patch_size": QWEN2_VL_TEMPORAL_PATCH_SIZE,
    }
    config = Qwen2VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids[QWEN2_VL_IMAGE_TOKEN],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    with _seeded(seed):
        model = Qwen2VLForConditionalGeneration(config).to(torch.float32).eval()

    vision_kwargs: dict[str, Any] = {
        "patch_size": QWEN2_VL_PATCH_SIZE,
        "merge_size": QWEN2_VL_MERGE_SIZE,
        "temporal_patch_size": QWEN2_VL_TEMPORAL_PATCH_SIZE,
        "size": {"shortest_edge": QWEN2_VL_MIN_PIXELS, "longest_edge": QWEN2_VL_MAX_PIXELS},
    }
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**vision_kwargs),
        tokenizer=tokenizer,
        # Saved so AutoProcessor finds every sub-processor it expects when loading.
        video_processor=Qwen2VLVideoProcessor(**vision_kwargs),
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
    _smoke_check(model, processor)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


# ---------------------------------------------------------------------------
# Shared pieces of the builders below.
# ---------------------------------------------------------------------------


#: Parameters that transformers initialises to zero (real checkpoints train them away
#: from it): left at zero, the image would have no effect at all on the tiny model's
#: text states. Gemma 3's projector matrix and InstructBLIP's query tokens get small
#: random values, Mllama's tanh gates on the cross-attention layers get 1.
_ZERO_INIT_PARAMETERS: dict[str, str] = {
    "mm_input_projection_weight": "normal",
    "query_tokens": "normal",
    "cross_attn_attn_gate": "one",
    "cross_attn_mlp_gate": "one",
}


def _init_model(model_class: Any, config: Any, seed: int) -> Any:
    """Instantiate ``model_class(config)`` under ``seed``, in float32, in eval mode.

    Parameters in :data:`_ZERO_INIT_PARAMETERS` are then set away from zero (under the
    same seed), so that images reach the text states in every family.
    """
    import torch

    with _seeded(seed):
        model = model_class(config).to(torch.float32).eval()
        with torch.no_grad():
            for name, param in model.named_parameters():
                how = _ZERO_INIT_PARAMETERS.get(name.rsplit(".", 1)[-1])
                if how == "normal":
                    param.normal_(mean=0.0, std=0.02)
                elif how == "one":
                    param.fill_(1.0)
    return model


def _save(model: Any, processor: Any, out_dir: Path) -> None:
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


def _siglip_vision_config(image_size: int, patch_size: int) -> Any:
    """Tiny SigLIP vision tower (no CLS token, no pooling head), 2 layers."""
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(
        hidden_size=VISION_HIDDEN_SIZE,
        intermediate_size=VISION_INTERMEDIATE_SIZE,
        num_hidden_layers=VISION_NUM_LAYERS,
        num_attention_heads=VISION_NUM_HEADS,
        image_size=image_size,
        patch_size=patch_size,
        vision_use_head=False,
    )


def _decoder_sizes(tokenizer: Any, *, vocab_size: int | None = None) -> dict[str, Any]:
    """The tiny decoder sizes shared by the Llama/Qwen/Gemma-style text configs."""
    return {
        "vocab_size": vocab_size if vocab_size is not None else len(tokenizer),
        "hidden_size": TEXT_HIDDEN_SIZE,
        "intermediate_size": TEXT_INTERMEDIATE_SIZE,
        "num_hidden_layers": TEXT_NUM_LAYERS,
        "num_attention_heads": TEXT_NUM_HEADS,
        "num_key_value_heads": TEXT_NUM_HEADS,
        "max_position_embeddings": 512,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _qwen_tokenizer(special_tokens: Sequence[str], chat_template: str | None, **extra: str) -> Any:
    """Qwen-style tokenizer: no BOS, ``<|im_end|>`` ends a turn, ``<|endoftext|>`` pads."""
    return _build_tokenizer(
        special_tokens,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=chat_template,
        extra_special_tokens=dict(extra) or None,
    )


def _qwen_vision_processors(patch_size: int, video_processor_class: Any) -> tuple[Any, Any]:
    """Qwen2-VL-style image + video processors with tiny pixel budgets (4 to 16 image tokens)."""
    from transformers import Qwen2VLImageProcessor

    kwargs: dict[str, Any] = {
        "patch_size": patch_size,
        "merge_size": QWEN2_VL_MERGE_SIZE,
        "temporal_patch_size": QWEN2_VL_TEMPORAL_PATCH_SIZE,
        "size": {
            "shortest_edge": (2 * patch_size * QWEN2_VL_MERGE_SIZE) ** 2,
            "longest_edge": (4 * patch_size * QWEN2_VL_MERGE_SIZE) ** 2,
        },
    }
    return Qwen2VLImageProcessor(**kwargs), video_processor_class(**kwargs)


# ---------------------------------------------------------------------------
# LLaVA-OneVision: SigLIP + Qwen2 decoder, "anyres_max_9" tiling, ChatML prompts.
# ---------------------------------------------------------------------------

#: Layout of the llava-hf LLaVA-OneVision template: images, then videos, then the text
#: of each turn ("<|im_start|>user <image>\n{text}<|im_end|>"), generation prompt
#: "<|im_start|>assistant\n".
LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _build_llava_onevision(out_dir: Path, seed: int) -> None:
    """LlavaOnevisionForConditionalGeneration (SigLIP + Qwen2, anyres_max_9) + LlavaOnevisionProcessor."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        Qwen2Config,
    )

    tokenizer = _qwen_tokenizer(
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"),
        LLAVA_ONEVISION_CHAT_TEMPLATE,
        image_token="<image>",
        video_token="<video>",
    )
    side, patch = LLAVA_IMAGE_SIZE, LLAVA_PATCH_SIZE
    pinpoints = [[side * h, side * w] for h, w in ((1, 1), (1, 2), (2, 1), (2, 2))]
    config = LlavaOnevisionConfig(
        vision_config=_siglip_vision_config(side, patch),
        text_config=Qwen2Config(**_decoder_sizes(tokenizer)),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pinpoints,
        # SigLIP has no CLS feature: keep every patch, as the real checkpoints do.
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
    )
    model = _init_model(LlavaOnevisionForConditionalGeneration, config, seed)
    vision = {"size": {"height": side, "width": side}}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(**vision, image_grid_pinpoints=pinpoints),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(**vision),
        num_image_tokens=(side // patch) ** 2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
    )
    _smoke_check(model, processor)
    _save(model, processor, out_dir)


# ---------------------------------------------------------------------------
# LLaVA-NeXT-Video: the LLaVA-NeXT model with a video branch (images work as in llava_next).
# ---------------------------------------------------------------------------

#: LLaVA-NeXT-Video's "USER: <image>\n{text} ASSISTANT:" layout (videos as <video>).
LLAVA_NEXT_VIDEO_CHAT_TEMPLATE = LLAVA_CHAT_TEMPLATE.replace(
    "{%- for part in message['content'] if part['type'] == 'image' -%}{{ '<image>\n' }}{%- endfor -%}",
    "{%- for part in message['content'] if part['type'] == 'image' -%}{{ '<image>\n' }}{%- endfor -%}"
    "{%- for part in message['content'] if part['type'] == 'video' -%}{{ '<video>\n' }}{%- endfor -%}",
)


def _build_llava_next_video(out_dir: Path, seed: int) -> None:
    """LlavaNextVideoForConditionalGeneration (CLIP + Llama, anyres) + LlavaNextVideoProcessor."""
    from transformers import (
        LlavaNextImageProcessor,
        LlavaNextVideoConfig,
        LlavaNextVideoForConditionalGeneration,
        LlavaNextVideoProcessor,
        LlavaNextVideoVideoProcessor,
    )

    if LLAVA_NEXT_VIDEO_CHAT_TEMPLATE == LLAVA_CHAT_TEMPLATE:
        raise RuntimeError("tiny llava_next_video: could not derive the chat template from LLAVA_CHAT_TEMPLATE")
    tokenizer = _build_tokenizer(
        (*LLAVA_SPECIAL_TOKENS, "<video>"),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        chat_template=LLAVA_NEXT_VIDEO_CHAT_TEMPLATE,
        extra_special_tokens={"image_token": LLAVA_IMAGE_TOKEN, "video_token": "<video>"},
    )
    side = LLAVA_IMAGE_SIZE
    pinpoints = [[side * h, side * w] for h, w in ((1, 2), (2, 1), (2, 2))]
    config = LlavaNextVideoConfig(
        vision_config=_clip_vision_config(),
        text_config=_llama_text_config(tokenizer),
        image_token_index=LLAVA_IMAGE_TOKEN_ID,
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_seq_length=LLAVA_NUM_IMAGE_TOKENS,
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        spatial_pool_stride=2,
    )
    model = _init_model(LlavaNextVideoForConditionalGeneration, config, seed)
    crop = {"height": side, "width": side}
    processor = LlavaNextVideoProcessor(
        video_processor=LlavaNextVideoVideoProcessor(size={"shortest_edge": side}, crop_size=crop),
        image_processor=LlavaNextImageProcessor(
            size={"shortest_edge": side}, crop_size=crop, image_grid_pinpoints=pinpoints
        ),
        tokenizer=tokenizer,
        patch_size=LLAVA_PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_NEXT_VIDEO_CHAT_TEMPLATE,
    )
    _smoke_check(model, processor)
    _save(model, processor, out_dir)


# ---------------------------------------------------------------------------
# Qwen2.5-VL and Qwen3-VL: the Qwen2-VL recipe with windowed / deepstack vision towers.
# ---------------------------------------------------------------------------


def _qwen_text_config(tokenizer: Any, **extra: Any) -> dict[str, Any]:
    """Text config dict for the Qwen*-VL decoders (M-RoPE sections sum to head_dim / 2)."""
    head_dim = TEXT_HIDDEN_SIZE // TEXT_NUM_HEADS
    sizes = _decoder_sizes(tokenizer)
    sizes["bos_token_id"] = tokenizer.pad_token_id  # Qwen: <|endoftext|> doubles as BOS id in the config
    rope = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 1, 1]}
    if sum(rope["mrope_section"]) * 2 != head_dim:
        raise RuntimeError(f"tiny qwen: mrope_section must sum to head_dim/2={head_dim // 2}")
    rope.update(extra.pop("rope_extra", {}))
    return {**sizes, "rope_parameters": rope, **extra}


def _qwen_vl_ids(tokenizer: Any) -> dict[str, int]:
    return {
        "image_token_id": tokenizer.convert_tokens_to_ids(QWEN2_VL_IMAGE_TOKEN),
        "video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    }


def _build_qwen2_5_vl(out_dir: Path, seed: int) -> None:
    """Qwen2_5_VLForConditionalGeneration (windowed-attention ViT + M-RoPE decoder) + Qwen2_5_VLProcessor."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLVideoProcessor,
    )

    # Qwen2.5-VL-Instruct ships the Qwen2-VL template (default system prompt, ChatML).
    tokenizer = _qwen_tokenizer(QWEN2_VL_SPECIAL_TOKENS, QWEN2_VL_CHAT_TEMPLATE)
    patch = QWEN2_VL_PATCH_SIZE
    vision_config = {
        "depth": VISION_NUM_LAYERS,
        "hidden_size": VISION_HIDDEN_SIZE,
        "intermediate_size": VISION_INTERMEDIATE_SIZE,
        "num_heads": VISION_NUM_HEADS,
        "out_hidden_size": TEXT_HIDDEN_SIZE,
        "patch_size": patch,
        "spatial_merge_size": QWEN2_VL_MERGE_SIZE,
        "temporal_patch_size": QWEN2_VL_TEMPORAL_PATCH_SIZE,
        # Windows of 2x2 merged tokens (24 px); the last block attends globally, as
        # every 8th block does in the real towers.
        "window_size": 2 * patch * QWEN2_VL_MERGE_SIZE,
        "fullatt_block_indexes": [VISION_NUM_LAYERS - 1],
    }
    config = Qwen2_5_VLConfig(
        text_config=_qwen_text_config(tokenizer), vision_config=vision_config, **_qwen_vl_ids(tokenizer)
    )
    model = _init_model(Qwen2_5_VLForConditionalGeneration, config, seed)
    image_processor, video_processor = _qwen_vision_processors(patch, Qwen2VLVideoProcessor)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
    _smoke_check(model, processor)
    _save(model, processor, out_dir)


#: Qwen3-VL-Instruct layout: ChatML without a default system prompt; images as
#: <|vision_start|><|image_pad|><|vision_end|>.
QWEN3_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _build_qwen3_vl(out_dir: Path, seed: int) -> None:
    """Qwen3VLForConditionalGeneration (deepstack ViT + interleaved M-RoPE decoder) + Qwen3VLProcessor."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor, Qwen3VLVideoProcessor

    tokenizer = _qwen_tokenizer(QWEN2_VL_SPECIAL_TOKENS, QWEN3_VL_CHAT_TEMPLATE)
    patch = QWEN2_VL_PATCH_SIZE
    text_config = _qwen_text_config(
        tokenizer, head_dim=TEXT_HIDDEN_SIZE // TEXT_NUM_HEADS, rope_extra={"mrope_interleaved": True}
    )
    vision_config = {
        "depth": VISION_NUM_LAYERS,
        "hidden_size": VISION_HIDDEN_SIZE,
        "intermediate_size": VISION_INTERMEDIATE_SIZE,
        "num_heads": VISION_NUM_HEADS,
        "out_hidden_size": TEXT_HIDDEN_SIZE,
        "patch_size": patch,
        "spatial_merge_size": QWEN2_VL_MERGE_SIZE,
        "temporal_patch_size": QWEN2_VL_TEMPORAL_PATCH_SIZE,
        # Learned position table of 8x8 patches, interpolated to each image's grid.
        "num_position_embeddings": 64,
        # Deepstack: features of vision block 0 are added to the residual stream after
        # decoder layer 0 (the real towers tap 3 blocks into decoder layers 0-2).
        "deepstack_visual_indexes": [0],
    }
    config = Qwen3VLConfig(text_config=text_config, vision_config=vision_config, **_qwen_vl_ids(tokenizer))
    model = _init_model(Qwen3VLForConditionalGeneration, config, seed)
    image_processor, video_processor = _qwen_vision_processors(patch, Qwen3VLVideoProcessor)
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN3_VL_CHAT_TEMPLATE,
    )
    _smoke_check(model, processor)
    _save(model, processor, out_dir)


# ---------------------------------------------------------------------------
# Idefics3 and SmolVLM: SigLIP-style tower, pixel-shuffle connector, image splitting.
# ---------------------------------------------------------------------------

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

#: Idefics3 / SmolVLM layout: "User:<image>{text}<end_of_utterance>\nAssistant:" (":" with
#: no space when the turn opens with an image). ``{prefix}`` is the family's BOS.
_IDEFICS3_STYLE_TEMPLATE = (
    "{prefix}{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{ line['text'] }}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
IDEFICS3_CHAT_TEMPLATE = _IDEFICS3_STYLE_TEMPLATE.replace("{prefix}", "<|begin_of_text|>")
SMOLVLM_CHAT_TEMPLATE = _IDEFICS3_STYLE_TEMPLATE.replace("{prefix}", "<|im_start|>")


def _idefics3_vision_kwargs() -> dict[str, Any]:
    return {
        "hidden_size": VISION_HIDDEN_SIZE,
        "intermediate_size": VISION_INTERMEDIATE_SIZE,
        "num_hidden_layers": VISION_NUM_LAYERS,
        "num_attention_heads": VISION_NUM_HEADS,
        "image_size": IDEFICS3_TILE_SIZE,
        "patch_size": IDEFICS3_PATCH_SIZE,
    }


def _idefics3_image_kwargs() -> dict[str, Any]:
    return {
        "size": {"longest_edge": 2 * IDEFICS3_TILE_SIZE},
        "max_image_size": {"longest_edge": IDEFICS3_TILE_SIZE},
        "do_image_splitting": True,
    }


def _build_idefics3(out_dir: Path, seed: int) -> None:
    """Idefics3ForConditionalGeneration (SigLIP-style tower + pixel shuffle + Llama) + Idefics3Processor."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        Idefics3VisionConfig,
        LlamaConfig,
    )

    tokenizer = _build_tokenizer(
        ("<|begin_of_text|>", "<|end_of_text|>", "<pad>", *IDEFICS3_TAG_TOKENS),
        bos_token="<|begin_of_text|>",
        # The chat template writes the BOS (the Llama-3 tokenizer would add a second one).
        add_bos=False,
        eos_token="<end_of_utterance>",
        pad_token="<pad>",
        chat_template=IDEFICS3_CHAT_TEMPLATE,
    )
    config = Idefics3Config(
        vision_config=Idefics3VisionConfig(**_idefics3_vision_kwargs()),
        text_config=LlamaConfig(**_decoder_sizes(tokenizer)),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=IDEFICS3_SCALE_FACTOR,
    )
    model = _init_model(Idefics3ForConditionalGeneration, config, seed)
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessor(**_idefics3_image_kwargs()),
        tokenizer=tokenizer,
        image_seq_len=IDEFICS3_IMAGE_SEQ_LEN,
        chat_template=IDEFICS3_CHAT_TEMPLATE,
    )
    _smoke_check(model, processor)
    _save(model, processor, out_dir)


def _build_smolvlm(out_dir: Path, seed: int) -> None:
    """SmolVLMForConditionalGeneration (Idefics3 recipe, SmolLM2-style tokenizer) + SmolVLMProcessor.

    The processor needs the ``num2words`` package (transformers raises ImportError without it).
    """
    from transformers import (
        LlamaConfig,
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
        SmolVLMVisionConfig,
    )

    tokenizer = _build_tokenizer(
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>", *IDEFICS3_TAG_TOKENS),
        bos_token="<|im_start|>",
        add_bos=False,  # written by the chat template
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        chat_template=SMOLVLM_CHAT_TEMPLATE,
        extra_special_tokens={
            "image_token": "<image>",
            "fake_image_token": "<fake_token_around_image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
        },
    )
    config = SmolVLMConfig(
        vision_config=SmolVLMVisionConfig(**_idefics3_vision_kwargs()),
        text_config=LlamaConfig(**_decoder_sizes(tokenizer)),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=IDEFICS3_SCALE_FACTOR,
    )
    model = _init_model(SmolVLMForConditionalGeneration, config, seed)
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(**_idefics3_image_kwargs()),
        tokenizer=tokenizer,
        video_processor=SmolVLMVideoProcessor(
            size={"longest_edge": 2 * IDEFICS3_TILE_SIZE}, max_image_size={"longest_edge": IDEFICS3_TILE_SIZE}
        ),
        image_seq_len=IDEFICS3_IMAGE_SEQ_LEN,
        chat_template=SMOLVLM_CHAT_TEMPLATE,
    )
    _smoke_check(model, processor)
    _save(model, processor, out_dir)


# ---------------------------------------------------------------------------
# PaliGemma and Gemma 3: SigLIP + Gemma decoders.
# ---------------------------------------------------------------------------

#: Gemma special tokens in the Gemma tokenizer's order (pad 0, eos 1, bos 2, unk 3).
GEMMA_SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<eos>", "<bos>", "<unk>")


def _gemma_text_kwargs(tokenizer: Any) -> dict[str, Any]:
    sizes = _decoder_sizes(tokenizer)
    head_dim = TEXT_HIDDEN_SIZE // TEXT_NUM_HEADS
    return {**sizes, "head_dim": head_dim}


def _build_paligemma(out_dir: Path, seed: int) -> None:
    """PaliGemmaForConditionalGeneration (SigLIP + Gemma, prefix-LM attention) + PaliGemmaProcessor.

    No chat template: the real PaliGemma checkpoints have none; the prompt is the task
    text with ``<image>`` in front, and the processor adds ``<bos>`` after the image
    tokens and a newline at the end.
    """
    from transformers import (
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessor,
    )

    tokenizer = _build_tokenizer(
        (*GEMMA_SPECIAL_TOKENS, "<image>"),
        bos_token="<bos>",
        add_bos=False,  # the processor writes <bos> after the image tokens
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        chat_template=None,
        extra_special_tokens={"image_token": "<image>"},
    )
    side, patch = LLAVA_IMAGE_SIZE, LLAVA_PATCH_SIZE
    image_processor = SiglipImageProcessor(size={"height": side, "width": side})
    image_processor.image_seq_length = (side // patch) ** 2
    # The processor adds PaliGemma's 1024 <locXXXX> + 128 <segXXX> tokens to the
    # tokenizer, so the vocabulary size is read after building it.
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = PaliGemmaConfig(
        vision_config=_siglip_vision_config(side, patch),
        text_config=GemmaConfig(**_gemma_text_kwargs(tokenizer)),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vocab_size=len(tokenizer),
        projection_dim=TEXT_HIDDEN_SIZE,
        hidden_size=TEXT_HIDDEN_SIZE,
    )
    model = _init_model(PaliGemmaForConditionalGeneration, config, seed)
    _smoke_check(model, processor)
    _save(model, processor, out_dir)


GEMMA3_TOKENS: tuple[str, ...] = (
    *GEMMA_SPECIAL_TOKENS,
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
)
#: Gemma 3 instruct layout: "<bos><start_of_turn>user\n<start_of_image>{text}<end_of_turn>\n"
#: then "<start_of_turn>model\n"; the processor expands <start_of_image> into
#: "\n\n<start_of_image>" + <image_soft_token> x 4 + "<end_of_image>\n\n".
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
GEMMA3_TILE_SIZE = 24
GEMMA3_MM_TOKENS_PER_IMAGE = 4


def _build_gemma3(out_dir: Path, seed: int) -> None:
    """Gemma3ForConditionalGeneration (SigLIP + avg-pooled projector + Gemma 3) + Gemma3Processor."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
        Gemma3TextConfig,
    )

    tokenizer = _build_tokenizer(
        GEMMA3_TOKENS,
        bos_token="<bos>",
        add_bos=False,  # the chat template writes {{ bos_token }}
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        chat_template=GEMMA3_CHAT_TEMPLATE,
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    )
    text_config = Gemma3TextConfig(
        **_gemma_text_kwargs(tokenizer),
        query_pre_attn_scalar=TEXT_HIDDEN_SIZE // TEXT_NUM_HEADS,
        # Local (sliding) and global layers alternate as in the real model (5:1 there).
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"] * (TEXT_NUM_LAYERS // 2),
    )
    config = Gemma3Config(
        text_config=text_config,
        vision_config=_siglip_vision_config(GEMMA3_TILE_SIZE, LLAVA_PATCH_SIZE),
        mm_tokens_per_image=GEMMA3_MM_TOKENS_PER_IMAGE,
        boi_token_index=tokenizer.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tokenizer.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image_soft_token>"),
    )
    model = _init_model(Gemma3ForConditionalGeneration, config, seed)
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": GEMMA3_TILE_SIZE, "width": GEMMA3_TILE_SIZE}),
        tokenizer=tokenizer,
        image_seq_length=GEMMA3_MM_TOKENS_PER_IMAGE,
        chat_template=GEMMA3_CHAT_TEMPLATE,
    )
    _smoke_check(model, processor)
    _save(model, processor, out_dir)


# ---------------------------------------------------------------------------
# Mllama (Llama 3.2 Vision): tiled vision encoder + cross-attention layers in the decoder.
# ---------------------------------------------------------------------------

#: Llama 3.2 Vision instruct layout (images first in the turn, no default system prompt).
MLLAMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<|image|>' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
MLLAMA_TILE_SIZE = 24


def _build_mllama(out_dir: Path, seed: int) -> None:
    """MllamaForConditionalGeneration (tiled ViT + cross-attention decoder) + MllamaProcessor."""
    from transformers import (
        MllamaConfig,
        MllamaForConditionalGeneration,
        MllamaImageProcessor,
        MllamaProcessor,
        MllamaTextConfig,
        MllamaVisionConfig,
    )

    tokenizer = _build_tokenizer(
        (
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|finetune_right_pad_id|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "<|image|>",
            "<|python_tag|>",
        ),
        bos_token="<|begin_of_text|>",
        add_bos=False,  # the chat template writes {{ bos_token }}
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
        chat_template=MLLAMA_CHAT_TEMPLATE,
        extra_special_tokens={"image_token": "<|image|>"},
    )
    max_tiles = 2
    vision_config = MllamaVisionConfig(
        hidden_size=VISION_HIDDEN_SIZE,
        intermediate_size=VISION_INTERMEDIATE_SIZE,
        num_hidden_layers=VISION_NUM_LAYERS,
        num_global_layers=1,
        attention_heads=VISION_NUM_HEADS,
        image_size=MLLAMA_TILE_SIZE,
        patch_size=LLAVA_PATCH_SIZE,
        max_num_tiles=max_tiles,
        intermediate_layers_indices=[0],
        # (1 + len(intermediate_layers_indices)) * hidden_size
        vision_output_dim=2 * VISION_HIDDEN_SIZE,
        supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]],
    )
    text_sizes = _decoder_sizes(tokenizer)
    text_sizes["num_hidden_layers"] = TEXT_NUM_LAYERS + 1  # one of them is a cross-attention layer
    text_config = MllamaTextConfig(**text_sizes, cross_attention_layers=[2])
    config = MllamaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<|image|>"),
    )
    model = _init_model(MllamaForConditionalGeneration, config, seed)
    processor = MllamaProcessor(
        image_processor=MllamaImageProcessor(
            size={"height": MLLAMA_TILE_SIZE, "width": MLLAMA_TILE_SIZE}, max_image_tiles=max_tiles
        ),
        tokenizer=tokenizer,
        chat_template=MLLAMA_CHAT_TEMPLATE,
    )
    _smoke_check(model, processor)
    _save(model, processor, out_dir)


# ---------------------------------------------------------------------------
# Kosmos-2: CLIP-style tower + perceiver-like latent queries + a decoder-only LM whose
# image slots are marked by `image_embeds_position_mask`, not by a token id.
# ---------------------------------------------------------------------------

KOSMOS2_LATENT_QUERIES = 64  # the processor's fixed default number of image slots


def _build_kosmos2(out_dir: Path, seed: int) -> None:
    """Kosmos2ForConditionalGeneration + Kosmos2Processor.

    No chat template: microsoft/kosmos-2-patch14-224 has none; prompts are plain text
    (e.g. ``"<grounding>An image of"``) and the processor itself writes
    ``<image>`` + 64 placeholder ids + ``</image>`` after ``<s>``.
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
    tokenizer = _build_tokenizer(
        ("<s>", "<pad>", "</s>", "<unk>"),
        bos_token="<s>",
        add_bos=False,  # the processor writes <s> as text
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        chat_template=None,
    )
    side, patch = LLAVA_IMAGE_SIZE, LLAVA_PATCH_SIZE
    image_processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    # Adds the 11 tag tokens and 1024 <patch_index_XXXX> tokens: vocabulary read after.
    processor = Kosmos2Processor(image_processor=image_processor, tokenizer=tokenizer)
    text_config = Kosmos2TextConfig(
        vocab_size=len(tokenizer),
        embed_dim=TEXT_HIDDEN_SIZE,
        layers=TEXT_NUM_LAYERS,
        ffn_dim=TEXT_INTERMEDIATE_SIZE,
        attention_heads=TEXT_NUM_HEADS,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    vision_config = Kosmos2VisionConfig(
        hidden_size=VISION_HIDDEN_SIZE,
        intermediate_size=VISION_INTERMEDIATE_SIZE,
        num_hidden_layers=VISION_NUM_LAYERS,
        num_attention_heads=VISION_NUM_HEADS,
        image_size=side,
        patch_size=patch,
    )
    config = Kosmos2Config(
        text_config=text_config, vision_config=vision_config, latent_query_num=KOSMOS2_LATENT_QUERIES
    )
    model = _init_model(Kosmos2ForConditionalGeneration, config, seed)
    _smoke_check(model, processor)
    _save(model, processor, out_dir)


# ---------------------------------------------------------------------------
# InstructBLIP: ViT + instruction-aware Q-Former + a LLaMA (Vicuna) or Flan-T5 LM.
# ---------------------------------------------------------------------------

INSTRUCTBLIP_QUERY_TOKENS = 8


def _qformer_tokenizer() -> Any:
    """BERT-style tokenizer for the Q-Former's instruction input ([CLS] prepended)."""
    return _build_tokenizer(
        ("[PAD]", "[CLS]", "[SEP]", "[UNK]"),
        bos_token="[CLS]",
        eos_token="[SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        chat_template=None,
        padding_side="right",
    )


def _instructblip(out_dir: Path, seed: int, tokenizer: Any, text_config: Any) -> None:
    from transformers import (
        BlipImageProcessor,
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
        InstructBlipQFormerConfig,
        InstructBlipVisionConfig,
    )

    qformer_tokenizer = _qformer_tokenizer()
    side, patch = LLAVA_IMAGE_SIZE, LLAVA_PATCH_SIZE
    config = InstructBlipConfig(
        vision_config=InstructBlipVisionConfig(
            hidden_size=VISION_HIDDEN_SIZE,
            intermediate_size=VISION_INTERMEDIATE_SIZE,
            num_hidden_layers=VISION_NUM_LAYERS,
            num_attention_heads=VISION_NUM_HEADS,
            image_size=side,
            patch_size=patch,
            # The config default (1e-10) leaves a random tower's output all but constant.
            initializer_range=0.02,
        ),
        qformer_config=InstructBlipQFormerConfig(
            vocab_size=len(qformer_tokenizer),
            hidden_size=VISION_HIDDEN_SIZE,
            num_hidden_layers=2,
            num_attention_heads=VISION_NUM_HEADS,
            intermediate_size=VISION_INTERMEDIATE_SIZE,
            max_position_embeddings=512,
            pad_token_id=qformer_tokenizer.pad_token_id,
            cross_attention_frequency=1,
        ),
        text_config=text_config,
        num_query_tokens=INSTRUCTBLIP_QUERY_TOKENS,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    model = _init_model(InstructBlipForConditionalGeneration, config, seed)
    processor = InstructBlipProcessor(
        image_processor=BlipImageProcessor(size={"height": side, "width": side}),
        tokenizer=tokenizer,
        qformer_tokenizer=qformer_tokenizer,
        num_query_tokens=INSTRUCTBLIP_QUERY_TOKENS,
    )
    _smoke_check(model, processor)
    _save(model, processor, out_dir)


def _build_instructblip(out_dir: Path, seed: int) -> None:
    """InstructBlipForConditionalGeneration with a tiny LLaMA (Vicuna-style) decoder.

    No chat template: Salesforce/instructblip-vicuna-7b has none; the prompt is the
    plain instruction and the processor prepends one ``<image>`` per query token.
    """
    tokenizer = _build_tokenizer(
        LLAVA_SPECIAL_TOKENS,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        chat_template=None,
        # No image_token attribute on the tokenizer: InstructBlipProcessor then registers
        # "<image>" itself (transformers 5.24 breaks on a plain-string tokenizer.image_token).
        padding_side="right",
    )
    _instructblip(out_dir, seed, tokenizer, _llama_text_config(tokenizer))


def _build_instructblip_t5(out_dir: Path, seed: int) -> None:
    """InstructBlipForConditionalGeneration with a tiny Flan-T5-style encoder-decoder LM.

    The image and prompt go through the T5 *encoder*; the decoder only sees
    ``decoder_input_ids``. No chat template (Salesforce/instructblip-flan-t5-xl has none).
    """
    from transformers import T5Config

    tokenizer = _build_tokenizer(
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
        d_kv=TEXT_HIDDEN_SIZE // TEXT_NUM_HEADS,
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
    _instructblip(out_dir, seed, tokenizer, text_config)


def _smoke_check(model: Any, processor: Any) -> list[int]:
    """Run the freshly built model on two differently sized images before saving.

    Catches processor/model disagreements (image-token count vs. image features,
    vocabulary size, chat template) at build time rather than in a user's test. The
    prompt layout, the extra forward inputs and where the language hidden states are
    come from :mod:`lmms_probe_tasks.families`.

    Returns:
        The number of image positions in each prompt (Mllama: of ``<|image|>`` markers).

    Raises:
        RuntimeError: If the forward fails or returns the wrong number of hidden states.
    """
    import torch
    from PIL import Image

    from lmms_probe_tasks import families

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


#: Architecture name -> builder writing a checkpoint into the given folder with the given seed.
BUILDERS: dict[str, Callable[[Path, int], None]] = {
    "llava": _build_llava,
    "llava_next": _build_llava_next,
    "llava_next_video": _build_llava_next_video,
    "llava_onevision": _build_llava_onevision,
    "qwen2_vl": _build_qwen2_vl,
    "qwen2_5_vl": _build_qwen2_5_vl,
    "qwen3_vl": _build_qwen3_vl,
    "idefics3": _build_idefics3,
    "smolvlm": _build_smolvlm,
    "paligemma": _build_paligemma,
    "gemma3": _build_gemma3,
    "mllama": _build_mllama,
    "kosmos2": _build_kosmos2,
    "instructblip": _build_instructblip,
    "instructblip_t5": _build_instructblip_t5,
}


#: Extra Python packages a builder (its processor) needs beyond the package's own dependencies.
REQUIREMENTS: dict[str, tuple[str, ...]] = {
    # transformers' SmolVLMProcessor raises ImportError without num2words (it spells out
    # frame counts in video prompts), at build time and again at load time.
    "smolvlm": ("num2words",),
}


def missing_requirements(arch: str) -> list[str]:
    """The packages in :data:`REQUIREMENTS` that ``arch`` needs and this environment lacks."""
    import importlib.util

    return [name for name in REQUIREMENTS.get(arch, ()) if importlib.util.find_spec(name) is None]


def _check_arch(arch: str) -> None:
    """Raise ``ValueError`` naming ``arch`` and the valid set if it has no builder."""
    if arch not in BUILDERS:
        raise ValueError(
            f"unknown tiny architecture {arch!r}; valid: {', '.join(sorted(BUILDERS))} "
            "(pass one of these names, or add a builder to lmms_probe_tasks.tiny.BUILDERS)"
        )


def build_tiny(arch: str, out_dir: str | os.PathLike[str], seed: int = 0) -> Path:
    """Build a tiny, randomly initialised checkpoint of a real image-text architecture.

    The folder loads offline with ``transformers.AutoModelForImageTextToText`` and
    ``transformers.AutoProcessor``. The weights are random: use it to test plumbing,
    not to get meaningful scores.

    Args:
        arch: Architecture name, one of :data:`BUILDERS` (e.g. ``"llava"``).
        out_dir: Folder to write; created if missing, existing files are overwritten.
        seed: Torch seed for the weight initialisation; the same seed gives identical weights.

    Returns:
        The checkpoint folder as a :class:`pathlib.Path`.

    Raises:
        ValueError: If ``arch`` is not a known architecture (the message lists the valid names).
        ImportError: If a package in :data:`REQUIREMENTS` for ``arch`` is missing.
    """
    _check_arch(arch)
    missing = missing_requirements(arch)
    if missing:
        raise ImportError(
            f"tiny {arch}: its processor needs {', '.join(missing)}, which is not installed "
            f"(pip install {' '.join(missing)})"
        )
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    with _single_threaded():
        BUILDERS[arch](path, int(seed))
    return path


def _parser() -> argparse.ArgumentParser:
    names = ", ".join(sorted(BUILDERS))
    parser = argparse.ArgumentParser(
        prog="python -m lmms_probe_tasks.tiny",
        description=(
            "Build a tiny checkpoint of a real transformers image-text architecture, offline. "
            "WARNING: the weights are RANDOM - useful for testing plumbing (loading, processors, "
            "hidden-state extraction, the harness), not for meaningful scores. "
            f"Available ARCH values: {names}."
        ),
    )
    parser.add_argument("arch", metavar="ARCH", help=f"architecture to build; one of: {names}")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write the checkpoint into (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="torch seed for the random weights (default: 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m lmms_probe_tasks.tiny ARCH OUT_DIR [--seed N]``.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The process exit status (0 on success; argparse exits with 2 on bad arguments).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    # Validate up front (before torch/transformers are imported, so a typo fails fast)
    # and only here turn the ValueError into a usage error: a ValueError raised while
    # building is a real failure and keeps its traceback.
    try:
        _check_arch(args.arch)
    except ValueError as err:
        parser.error(str(err))
    path = build_tiny(args.arch, args.out_dir, seed=args.seed)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
