"""Shared pieces of the tiny builders: sizes, seeding, thread pinning, model init and config helpers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

# Shared tiny sizes. Small enough that a CPU forward of a batch of 8 takes
# milliseconds, large enough that every code path (multi-head attention, several
# decoder layers, a vision tower with a penultimate layer to select) is exercised.
TEXT_HIDDEN_SIZE = 32
TEXT_NUM_LAYERS = 4
TEXT_NUM_HEADS = 4
TEXT_INTERMEDIATE_SIZE = 64
TEXT_HEAD_DIM = TEXT_HIDDEN_SIZE // TEXT_NUM_HEADS
VISION_HIDDEN_SIZE = 32
VISION_NUM_LAYERS = 2
VISION_NUM_HEADS = 4
VISION_INTERMEDIATE_SIZE = 64
#: Position table length of every tiny text model.
MAX_POSITIONS = 512

#: The default tiny image geometry (LLaVA and most towers): 30 px images cut into 6 px
#: patches, i.e. 5 x 5 = 25 patch features.
IMAGE_SIZE = 30
PATCH_SIZE = 6

#: Parameters that transformers initialises to zero (real checkpoints train them away
#: from it): left at zero, the image would have no effect at all on the tiny model's
#: text states. Gemma 3's projector matrix and InstructBLIP's query tokens get small
#: random values, Mllama's tanh gates on the cross-attention layers get 1.
ZERO_INIT_PARAMETERS: dict[str, str] = {
    "mm_input_projection_weight": "normal",
    "query_tokens": "normal",
    "cross_attn_attn_gate": "one",
    "cross_attn_mlp_gate": "one",
}


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore the caller's setting.

    The tiny models' matrices are a few dozen wide: extra threads only add
    synchronisation, which on a busy machine costs ~10x the work itself.

    Yields:
        Nothing; torch is single-threaded inside the ``with`` block.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU RNG for model init without disturbing the caller's RNG state.

    Args:
        seed: The torch seed inside the ``with`` block.

    Yields:
        Nothing; the global generator is restored on exit.
    """
    import torch

    # fork_rng restores the global generator afterwards, so building a tiny model in
    # the middle of a test does not change the random numbers the test draws next.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def init_model(model_class: Any, config: Any, seed: int) -> Any:
    """Instantiate ``model_class(config)`` under ``seed``, in float32, in eval mode.

    Parameters in :data:`ZERO_INIT_PARAMETERS` are then set away from zero (under the
    same seed), so that images reach the text states in every family; a model with
    none of them is exactly ``model_class(config)`` under the seed.

    Args:
        model_class: A ``transformers`` model class, e.g. ``LlavaForConditionalGeneration``.
        config: The config to instantiate it from.
        seed: Torch seed for the random weights.

    Returns:
        The model, float32, in eval mode.
    """
    import torch

    with seeded(seed):
        model = model_class(config).to(torch.float32).eval()
        with torch.no_grad():
            for name, param in model.named_parameters():
                how = ZERO_INIT_PARAMETERS.get(name.rsplit(".", 1)[-1])
                if how == "normal":
                    param.normal_(mean=0.0, std=0.02)
                elif how == "one":
                    param.fill_(1.0)
    return model


def decoder_sizes(tokenizer: Any) -> dict[str, Any]:
    """The tiny decoder sizes and special-token ids shared by the Llama/Qwen/Gemma-style text configs.

    Args:
        tokenizer: The family's tokenizer; its length is the vocabulary size.

    Returns:
        Keyword arguments for a Llama-style text config.
    """
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": TEXT_HIDDEN_SIZE,
        "intermediate_size": TEXT_INTERMEDIATE_SIZE,
        "num_hidden_layers": TEXT_NUM_LAYERS,
        "num_attention_heads": TEXT_NUM_HEADS,
        "num_key_value_heads": TEXT_NUM_HEADS,
        "max_position_embeddings": MAX_POSITIONS,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def llama_text_config(tokenizer: Any) -> Any:
    """Tiny Llama decoder whose vocabulary is exactly the tokenizer's.

    Args:
        tokenizer: The family's tokenizer.

    Returns:
        A ``transformers.LlamaConfig``.
    """
    from transformers import LlamaConfig

    return LlamaConfig(**decoder_sizes(tokenizer))


def vision_sizes(image_size: int, patch_size: int) -> dict[str, int]:
    """The tiny ViT sizes shared by the CLIP/SigLIP-style vision configs.

    Args:
        image_size: Side of the (square) input image in pixels.
        patch_size: Side of one patch in pixels.

    Returns:
        Keyword arguments for a CLIP-style vision config.
    """
    return {
        "hidden_size": VISION_HIDDEN_SIZE,
        "intermediate_size": VISION_INTERMEDIATE_SIZE,
        "num_hidden_layers": VISION_NUM_LAYERS,
        "num_attention_heads": VISION_NUM_HEADS,
        "image_size": image_size,
        "patch_size": patch_size,
    }


def clip_vision_config() -> Any:
    """Tiny CLIP vision tower: 30 px images, 6 px patches, 2 layers.

    Returns:
        A ``transformers.CLIPVisionConfig``.
    """
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(**vision_sizes(IMAGE_SIZE, PATCH_SIZE), projection_dim=VISION_HIDDEN_SIZE)


def siglip_vision_config(image_size: int, patch_size: int) -> Any:
    """Tiny SigLIP vision tower (no CLS token, no pooling head), 2 layers.

    Args:
        image_size: Side of the (square) input image in pixels.
        patch_size: Side of one patch in pixels.

    Returns:
        A ``transformers.SiglipVisionConfig``.
    """
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(**vision_sizes(image_size, patch_size), vision_use_head=False)


def clip_image_sizes() -> dict[str, dict[str, int]]:
    """Resize-then-centre-crop sizes of the CLIP-style image processors (30 px squares).

    Returns:
        ``size`` and ``crop_size`` keyword arguments (fresh dicts on every call).
    """
    return {"size": {"shortest_edge": IMAGE_SIZE}, "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}}
