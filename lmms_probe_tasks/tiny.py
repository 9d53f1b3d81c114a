"""Tiny, randomly initialised checkpoints of real image-text architectures, built offline (tests, CI, demo).

The architectures are real ``transformers`` model and processor classes (LLaVA,
LLaVA-NeXT, Qwen2-VL); only the sizes are tiny.

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
    chat_template: str,
    extra_special_tokens: dict[str, str] | None = None,
) -> Any:
    """Train a byte-level BPE on the built-in corpus and wrap it for transformers.

    Args:
        special_tokens: Tokens given the first ids, in this order; never split.
        bos_token: Prepended to every encoding (Llama style) or ``None`` (Qwen style).
        eos_token: End-of-sequence token (one of ``special_tokens``).
        pad_token: Padding token (one of ``special_tokens``).
        chat_template: Jinja chat template stored with the tokenizer.
        extra_special_tokens: Named extra tokens (e.g. ``{"image_token": "<image>"}``)
            exposed as tokenizer attributes, which processors read.

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
    if bos_token is not None:
        bos_id = tok.token_to_id(bos_token)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos_token} $A", pair=f"{bos_token} $A {bos_token} $B", special_tokens=[(bos_token, bos_id)]
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
        chat_template=chat_template,
        # Left padding, as in the llava-hf checkpoints: batched decoder-only inference
        # then ends every row at its last real token.
        padding_side="left",
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
    counts = _smoke_check(model, processor, LLAVA_IMAGE_TOKEN_ID)
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
    _smoke_check(model, processor, LLAVA_IMAGE_TOKEN_ID)
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
    _smoke_check(model, processor, ids[QWEN2_VL_IMAGE_TOKEN])
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


def _smoke_check(model: Any, processor: Any, image_token_id: int) -> list[int]:
    """Run the freshly built model on two differently sized images before saving.

    Catches processor/model disagreements (image-token count vs. image features,
    vocabulary size, chat template) at build time rather than in a user's test.

    Returns:
        The number of image tokens in each prompt.

    Raises:
        RuntimeError: If the forward fails or returns the wrong number of hidden states.
    """
    import torch
    from PIL import Image

    messages = [
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is there a cat?"}]}],
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the colours."}]}],
    ]
    prompts = [processor.apply_chat_template(m, add_generation_prompt=True) for m in messages]
    # Non-square sizes exercise resizing/cropping/tiling; different sizes exercise batching.
    images = [Image.new("RGB", (47, 31), (200, 30, 30)), Image.new("RGB", (24, 60), (30, 30, 200))]
    batch = processor(images=images, text=prompts, padding=True, return_tensors="pt")
    try:
        with torch.no_grad():
            out = model(**batch, output_hidden_states=True)
    except Exception as err:  # re-raised with the context a builder author needs
        raise RuntimeError(f"tiny {model.config.model_type}: smoke forward failed: {err}") from err
    expected = model.config.get_text_config().num_hidden_layers + 1
    if len(out.hidden_states) != expected:
        raise RuntimeError(
            f"tiny {model.config.model_type}: got {len(out.hidden_states)} hidden states, expected {expected}"
        )
    return [int(n) for n in (batch["input_ids"] == image_token_id).sum(dim=1)]


#: Architecture name -> builder writing a checkpoint into the given folder with the given seed.
BUILDERS: dict[str, Callable[[Path, int], None]] = {
    "llava": _build_llava,
    "llava_next": _build_llava_next,
    "qwen2_vl": _build_qwen2_vl,
}


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
    """
    _check_arch(arch)
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
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
