"""The runtime family table: what extraction needs to know about each image-text model family.

One :class:`Family` per ``config.model_type`` (see :data:`FAMILIES`). The defaults
describe the common case, a decoder-only LM with image features scattered into
image-token slots (LLaVA, Qwen2-VL, ...):

* ``model(**inputs, output_hidden_states=True).hidden_states`` holds the language
  decoder's states, ``text_config.num_hidden_layers + 1`` tensors ``[B, T, d]``
  (row 0 = input embeddings with the image features in place, the last row after
  the final norm);
* image positions are ``input_ids == config.image_token_id``;
* the prompt comes from the processor's chat template (one ``{"type": "image"}``
  part per image, then the text), ``add_generation_prompt=True``; the processor
  takes a flat list of images for a batch;
* ``model.get_decoder().layers`` are the decoder layers, ``.norm`` the final norm,
  and hooks on them reproduce ``hidden_states`` exactly;
  ``model.config.get_text_config()`` has ``num_hidden_layers`` / ``hidden_size``;
* ``forward`` takes ``logits_to_keep`` (so the LM head can be skipped but for one
  position);
* the prompt is causal: documents that show the same image and agree past it can run
  that prefix once and their suffixes through ``get_decoder()`` against its KV cache
  (``prefix_sharing``).

Each family's vision encoder (the ``vision`` site) is in the companion table
:data:`lmms_probe_tasks.extract.vision.VISION`, one entry per key here.

Every entry that departs from a default says why in a comment. The table holds only
what the extraction path reads; the facts only tests check (which tiny builder makes a
family, whether real checkpoints ship a chat template, padding invariance) live in
``tests/family_facts.py``, keyed by the same :func:`family_key`. Each fact was checked on
the tiny checkpoints of :mod:`lmms_probe_tasks.tiny` (transformers 5.24, float32, CPU)
by ``tests/test_families.py``; the real checkpoints share the classes and code paths,
only the sizes differ.

The helpers (:func:`lookup`, :func:`build_prompt` (re-exported from
:mod:`lmms_probe_tasks.extract.prompts`), :func:`processor_images`,
:func:`forward_kwargs`, :func:`language_hidden_states`, :func:`image_positions`,
:func:`decoder_layers`, :func:`final_norm`, :func:`suffix_decoder`) apply the table so
that callers need no per-family branches.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from lmms_probe_tasks.extract.prompts import build_prompt


@dataclasses.dataclass(frozen=True)
class Family:
    """Facts about one ``model_type`` that extraction reads (defaults: decoder-only LM, LLaVA-like).

    Attributes:
        hidden_states: Dotted attribute path, on the forward output, of the probed
            stack's hidden states (``text_config.num_hidden_layers + 1`` tensors).
        stack: Which stack those states come from (recorded in every result).
        image_positions: How to find the positions that hold image features:
            ``"image_token_id"`` (``input_ids == config.image_token_id``),
            ``"image_embeds_position_mask"`` (a processor output of that name), or
            ``"cross_attention"`` (none: image features reach the text only through
            cross-attention layers).
        prompt: ``"chat_template"``: the processor's chat template with one image part
            per image; ``"text"``: the bare text (the processor writes the image
            placeholders itself; an image token in the text would add a second set);
            ``"image_tokens_then_text"``: ``processor.image_token`` once per image, then
            the text (the processor adds the rest). See :mod:`lmms_probe_tasks.extract.prompts`.
        nested_images: The processor needs ``images`` as one list per document
            (``[[img], [img]]``); a flat list is taken as all images of ONE document.
        drop_inputs: Processor outputs not to pass to ``forward``.
        decoder_input_ids: ``forward`` needs ``decoder_input_ids`` (encoder-decoder LM):
            one ``decoder_start_token_id`` per row is enough to run the encoder.
        decoder_layers: Dotted path, from the model, of the probed stack's layer list
            (``len == text_config.num_hidden_layers``); ``name()`` calls a method.
            Forward hooks on these layers (a pre-hook on the first for row 0) and on
            :attr:`final_norm` reproduce :attr:`hidden_states` exactly.
        final_norm: Dotted path of the final norm (its output is the last row).
        logits_to_keep: Whether ``forward`` has a ``logits_to_keep`` parameter.
        prefix_sharing: Documents with the same image(s) and a common prompt prefix may
            run that prefix once and only their suffixes against its KV cache
            (``share_prefix=true``, :mod:`lmms_probe_tasks.extract.shared_prefix`). On only
            where the prefix's states cannot depend on what follows (causal attention
            over the whole prompt, image features that do not read the text) and the
            positions and cache continue exactly; checked per family by
            ``tests/test_families.py`` (equal where on, wrong when forced where off).
        suffix_decoder: Dotted path of the module the suffixes run through: the probed
            stack with its embeddings, taking ``input_ids``, ``attention_mask``,
            ``position_ids`` and the cache.
        notes: Anything else a caller must know (recorded in every result).
    """

    hidden_states: str = "hidden_states"
    stack: str = "decoder-only LM"
    image_positions: str = "image_token_id"
    prompt: str = "chat_template"
    nested_images: bool = False
    drop_inputs: tuple[str, ...] = ()
    decoder_input_ids: bool = False
    decoder_layers: str = "get_decoder().layers"
    final_norm: str = "get_decoder().norm"
    logits_to_keep: bool = True
    prefix_sharing: bool = True
    suffix_decoder: str = "get_decoder()"
    notes: str = ""


#: ``config.model_type`` -> facts. ``"instructblip+t5"`` is the encoder-decoder variant of
#: ``"instructblip"`` (same model_type; :func:`family_key` tells them apart).
FAMILIES: dict[str, Family] = {
    "llava": Family(),
    "llava_next": Family(
        notes=(
            "anyres: the image-token count varies with the aspect ratio; the last image slot of each row of "
            "patches holds the learned, image-independent image_newline feature"
        ),
    ),
    "llava_next_video": Family(notes="images exactly as llava_next"),
    "llava_onevision": Family(notes="anyres_max_9; image_newline slots as llava_next"),
    "qwen2_vl": Family(
        # prefix_sharing stays on: the suffix's M-RoPE position ids (text after the image:
        # the same id in all three rows) continue from the largest prefix position.
        notes="M-RoPE position ids are computed inside forward from input_ids, image_grid_thw and the attention mask",
    ),
    "qwen2_5_vl": Family(notes="as qwen2_vl"),
    "qwen3_vl": Family(
        notes=(
            "deepstack: vision features of some ViT blocks are added at the image positions AFTER decoder "
            "layers 0..k-1; hidden_states[i+1] (and a hook on layer i) is layer i's output before that add"
        ),
    ),
    "idefics3": Family(
        notes="images are split into tiles + a global view, each wrapped in <fake_token_around_image>/<row_i_col_j>",
    ),
    "smolvlm": Family(
        # SmolVLMProcessor reads a flat image list as the images of ONE prompt.
        nested_images=True,
        notes="as idefics3; the processor needs the num2words package",
    ),
    "paligemma": Family(
        # Real PaliGemma checkpoints have no chat template: "<image>" + text, and the
        # processor inserts "<bos>" after the image tokens and "\n" at the end.
        prompt="image_tokens_then_text",
        # The processor returns `labels` (all -100 without a suffix): passing them makes
        # forward compute a loss, which fails against logits_to_keep=1.
        drop_inputs=("labels",),
        # Prefix-LM: image + the WHOLE prompt attend bidirectionally, so the image and
        # template states depend on each document's text (forced sharing: 1e-2 to 1e-1 off).
        prefix_sharing=False,
        notes="prefix-LM: image + prompt attend bidirectionally (token_type_ids from the processor)",
    ),
    "gemma3": Family(
        # Gemma3Processor reads a flat image list as the images of ONE prompt.
        nested_images=True,
        # prefix_sharing stays on: only the image tokens attend bidirectionally, among
        # themselves, and a shared prefix always holds all of them (it ends after the last
        # one); the text attends causally. Sliding-window layers keep their window in the cache.
        notes=(
            "processor.image_token is <start_of_image> (the boi tag, one per image), NOT the id in "
            "config.image_token_id (<image_soft_token>, mm_tokens_per_image per image): locate image "
            "positions with config.image_token_id; image tokens attend bidirectionally (token_type_ids)"
        ),
    ),
    "mllama": Family(
        # Image features never enter the token sequence: the one <|image|> token per
        # image (config.image_token_id) is a plain text embedding.
        image_positions="cross_attention",
        # MllamaProcessor reads a flat image list as the images of ONE prompt.
        nested_images=True,
        # The image enters through cross-attention layers, which the suffix pass (the
        # text decoder with a self-attention cache) would not feed: no image position to
        # end a prefix after, and the cross-attention mask is per token.
        prefix_sharing=False,
        notes=(
            "text_config.num_hidden_layers counts the cross-attention layers (text_config.cross_attention_layers) "
            "too; get_decoder().layers mixes both kinds"
        ),
    ),
    "kosmos-2": Family(
        # Image slots are ordinary placeholder ids (unk+1 ... unk+64), marked by the
        # processor's `image_embeds_position_mask`; the config has no image_token_id.
        image_positions="image_embeds_position_mask",
        # No chat template in microsoft/kosmos-2-patch14-224; the processor writes
        # <s><image> + 64 slots + </image> before the text itself.
        prompt="text",
        # get_decoder() returns Kosmos2TextForCausalLM, which has no layer list; the
        # transformer is one level down (it also runs the suffixes).
        decoder_layers="text_model.model.layers",
        final_norm="text_model.model.layer_norm",
        suffix_decoder="text_model.model",
        # prefix_sharing stays on: a suffix's positions count its non-pad tokens plus the
        # cache length, which is the (unpadded) prefix's length.
        notes="positions come from input_ids (pad id skipped), so either padding side works",
    ),
    "instructblip": Family(
        # The output wraps the LM's own output; there is no top-level hidden_states.
        hidden_states="language_model_outputs.hidden_states",
        # No chat template in Salesforce/instructblip-vicuna-7b; the processor prepends
        # num_query_tokens <image> tokens to the text itself.
        prompt="text",
        # forward takes **kwargs only (forwarded to the LM), no named logits_to_keep.
        logits_to_keep=False,
        # The Q-Former reads the document's text (qformer_input_ids), so the image slots'
        # features differ per document even where the token ids agree (forced sharing:
        # 2e-3 to 2e-2 off).
        prefix_sharing=False,
        notes=(
            "image slots = the num_query_tokens <image> tokens (config.image_token_id) the processor puts "
            "BEFORE <s>; the Q-Former also reads the text (qformer_input_ids)"
        ),
    ),
    "instructblip+t5": Family(
        # Image + prompt go through the T5 encoder; the decoder only sees decoder_input_ids.
        hidden_states="language_model_outputs.encoder_hidden_states",
        stack="encoder of the encoder-decoder LM (T5 encoder)",
        prompt="text",
        # Seq2seq forward raises without decoder inputs.
        decoder_input_ids=True,
        # get_decoder() is the T5 *decoder* (it runs over decoder_input_ids only).
        decoder_layers="get_encoder().block",
        final_norm="get_encoder().final_layer_norm",
        logits_to_keep=False,
        # An encoder attends bidirectionally; and the Q-Former reads the text, as above.
        prefix_sharing=False,
        notes="text_config.num_hidden_layers is the ENCODER depth (T5 num_layers)",
    ),
}


def family_key(config: Any) -> str:
    """Return the :data:`FAMILIES` key of a model config (``model_type``, or a variant key).

    Args:
        config: A transformers config (``model.config``).

    Returns:
        The key, e.g. ``"llava"`` or ``"instructblip+t5"``.
    """
    model_type = config.model_type
    if model_type == "instructblip" and not getattr(config, "use_decoder_only_language_model", True):
        return "instructblip+t5"
    return model_type


def lookup(config: Any) -> Family:
    """Return the facts for a model config; unknown families get the defaults (with a ``notes`` warning).

    Args:
        config: A transformers config (``model.config``).

    Returns:
        The :class:`Family` entry.
    """
    key = family_key(config)
    if key in FAMILIES:
        return FAMILIES[key]
    # Sharing a prefix is exact only where verified: off for families not in the table.
    return Family(
        prefix_sharing=False,
        notes=f"{key!r} is not in lmms_probe_tasks.extract.families.FAMILIES: defaults assumed, unverified",
    )


def resolve(obj: Any, path: str) -> Any:
    """Follow a dotted attribute path (``name()`` calls a method), e.g. ``get_decoder().layers``."""
    for part in path.split("."):
        if part.endswith("()"):
            obj = getattr(obj, part[:-2])()
        else:
            obj = getattr(obj, part)
    return obj


def processor_images(family: Family, images_per_doc: list[list[Any]]) -> list[Any]:
    """Return the ``images=`` argument for a batch: nested per document, or flat, as the processor wants.

    Args:
        family: The checkpoint's :class:`Family`.
        images_per_doc: One list of PIL images per document.

    Returns:
        ``[[img, ...], ...]`` for :attr:`Family.nested_images` families, else the flat list.
    """
    if family.nested_images:
        return [list(images) for images in images_per_doc]
    return [image for images in images_per_doc for image in images]


def forward_kwargs(model: Any, family: Family, inputs: Any) -> dict[str, Any]:
    """Return the forward arguments for a processor output: ``model(**forward_kwargs(...))``.

    Drops the processor outputs listed in ``family.drop_inputs``, adds
    ``decoder_input_ids`` (one start token per row) for encoder-decoder LMs and
    ``logits_to_keep=1`` where ``forward`` accepts it.

    Args:
        model: The transformers model.
        family: Its :class:`Family`.
        inputs: The processor output (``input_ids`` ``[batch, seq]`` int64, ...).

    Returns:
        Keyword arguments for ``model.forward``.
    """
    import torch

    extra: dict[str, Any] = {k: v for k, v in inputs.items() if k not in family.drop_inputs}
    if family.decoder_input_ids:
        start = model.config.get_text_config().decoder_start_token_id
        rows = inputs["input_ids"].shape[0]
        extra["decoder_input_ids"] = torch.full(
            (rows, 1), int(start), dtype=torch.long, device=inputs["input_ids"].device
        )
    if family.logits_to_keep and "logits_to_keep" in inspect.signature(model.forward).parameters:
        extra["logits_to_keep"] = 1
    return extra


def language_hidden_states(out: Any, family: Family) -> tuple[Any, ...]:
    """Return the probed stack's per-layer hidden states from a forward output.

    Args:
        out: The output of ``model(..., output_hidden_states=True)``.
        family: The model's :class:`Family`.

    Returns:
        ``num_hidden_layers + 1`` tensors ``[batch, seq, hidden]``.

    Raises:
        ValueError: The output holds no hidden states there.
    """
    states = resolve(out, family.hidden_states)
    if states is None:
        raise ValueError(f"no hidden states at out.{family.hidden_states}: pass output_hidden_states=True")
    return tuple(states)


def image_positions(config: Any, family: Family, inputs: Any) -> Any:
    """Return the boolean ``[batch, seq]`` mask of the positions that hold image features.

    Args:
        config: The model config.
        family: Its :class:`Family`.
        inputs: The processor output of the batch.

    Returns:
        A bool tensor, True at image positions.

    Raises:
        ValueError: For families whose image features never enter the sequence (Mllama).
    """
    if family.image_positions == "image_embeds_position_mask":
        return inputs["image_embeds_position_mask"].bool()
    if family.image_positions == "cross_attention":
        raise ValueError(
            f"{config.model_type}: image features reach the text only through cross-attention; "
            "no sequence position holds them"
        )
    return inputs["input_ids"] == config.image_token_id


def suffix_decoder(model: Any, family: Family) -> Any:
    """The module ``model``'s documents' suffixes run through against a prefix cache (:attr:`Family.suffix_decoder`)."""
    return resolve(model, family.suffix_decoder)


def decoder_layers(model: Any, family: Family) -> Any:
    """The probed stack's layer list of ``model`` (or a ``meta`` copy); ``len`` = ``num_hidden_layers``."""
    return resolve(model, family.decoder_layers)


def final_norm(model: Any, family: Family) -> Any:
    """The probed stack's final norm in ``model`` (or a ``meta`` copy): its output is the last row."""
    return resolve(model, family.final_norm)


__all__ = [
    "FAMILIES",
    "Family",
    "build_prompt",
    "decoder_layers",
    "family_key",
    "final_norm",
    "forward_kwargs",
    "image_positions",
    "language_hidden_states",
    "lookup",
    "processor_images",
    "resolve",
    "suffix_decoder",
]
