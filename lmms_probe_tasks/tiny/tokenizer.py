"""Train the tiny checkpoints' byte-level BPE tokenizers in memory on a small built-in English corpus."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: Target size of the trained BPE vocabulary (bytes + merges + special tokens); the
#: built-in corpus may run out of merges first, the config always uses the real size.
BPE_VOCAB_SIZE = 768

#: Llama-style special tokens, ids 0-3 (``<image>`` is LLaVA's and InstructBLIP's placeholder).
LLAMA_SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<s>", "</s>", "<image>")

# Small English corpus about shapes, colours, objects and captions: only shapes the
# BPE merges (so common words become single tokens); coverage of arbitrary text comes
# from the byte-level alphabet, not from this list.
CORPUS: tuple[str, ...] = (
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


def _train_bpe(special_tokens: Sequence[str]) -> Any:
    """Train a byte-level BPE on :data:`CORPUS`, ``special_tokens`` first.

    Args:
        special_tokens: Tokens given the first ids, in this order; never split.

    Returns:
        A ``tokenizers.Tokenizer`` without a post-processor.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

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
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok


def _post_processor(tok: Any, bos_token: str | None, eos_token: str, *, add_bos: bool, add_eos: bool) -> Any:
    """The post-processor that adds BOS/EOS to every encoding, or a plain byte-level one.

    Args:
        tok: The trained ``tokenizers.Tokenizer`` (for the special-token ids).
        bos_token: Beginning-of-sequence token, or ``None``.
        eos_token: End-of-sequence token.
        add_bos: Prepend ``bos_token``.
        add_eos: Append ``eos_token``.

    Returns:
        A ``tokenizers.processors`` post-processor.

    Raises:
        ValueError: If ``add_bos`` is set without a ``bos_token``.
    """
    from tokenizers import processors

    if add_bos and bos_token is None:
        raise ValueError("add_bos=True needs a bos_token")
    if not (add_bos or add_eos):
        return processors.ByteLevel(trim_offsets=False)
    prefix = f"{bos_token} " if add_bos else ""
    suffix = f" {eos_token}" if add_eos else ""
    used = ([bos_token] if add_bos else []) + ([eos_token] if add_eos else [])
    return processors.TemplateProcessing(
        single=f"{prefix}$A{suffix}",
        pair=f"{prefix}$A{suffix} {prefix}$B{suffix}",
        special_tokens=[(t, tok.token_to_id(t)) for t in dict.fromkeys(used)],
    )


def build_tokenizer(
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

    Raises:
        RuntimeError: If a special token did not get its position as id.
    """
    from transformers import PreTrainedTokenizerFast

    tok = _train_bpe(special_tokens)
    if add_bos is None:
        add_bos = bos_token is not None
    tok.post_processor = _post_processor(tok, bos_token, eos_token, add_bos=add_bos, add_eos=add_eos)
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


def llama_tokenizer(
    chat_template: str | None, *, extra_tokens: Sequence[str] = (), padding_side: str = "left", **named: str
) -> Any:
    """Llama-style tokenizer: ``<s>`` prepended to every encoding, ``</s>`` ends, ``<pad>`` pads.

    Args:
        chat_template: Jinja chat template, or ``None``.
        extra_tokens: Special tokens after :data:`LLAMA_SPECIAL_TOKENS` (ids 4, 5, ...).
        padding_side: The tokenizer's default padding side.
        **named: Named extra tokens exposed as tokenizer attributes (``image_token="<image>"``).

    Returns:
        A ``transformers.PreTrainedTokenizerFast``.
    """
    return build_tokenizer(
        (*LLAMA_SPECIAL_TOKENS, *extra_tokens),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        chat_template=chat_template,
        extra_special_tokens=dict(named) or None,
        padding_side=padding_side,
    )


def qwen_tokenizer(special_tokens: Sequence[str], chat_template: str | None, **named: str) -> Any:
    """Qwen-style tokenizer: no BOS, ``<|im_end|>`` ends a turn, ``<|endoftext|>`` pads.

    Args:
        special_tokens: Tokens given the first ids (must include the three above).
        chat_template: Jinja chat template, or ``None``.
        **named: Named extra tokens exposed as tokenizer attributes.

    Returns:
        A ``transformers.PreTrainedTokenizerFast``.
    """
    return build_tokenizer(
        special_tokens,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=chat_template,
        extra_special_tokens=dict(named) or None,
    )
