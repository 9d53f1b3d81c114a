"""Runs shared prompt prefixes once with a KV cache, then each document's suffix against a copy of it.

A :class:`~lmms_probe_tasks.extract.prefix_plan.PrefixBatch` runs in two steps:

1. :func:`run_prefix`: one forward pass of the whole model (vision tower included)
   over the groups' common prefixes, ``[groups, P]`` with no padding, filling a
   ``DynamicCache`` and pooling every requested layer into *sums* over the prefix
   positions the pooling mode covers (none for ``last``);
2. :func:`run_suffixes`: the probed stack alone over the documents' suffixes
   (right-padded, text only), against the prefix cache copied along the batch to
   one row per document; the suffix sums are added to their group's prefix sums and
   divided by the joint count, so every pooling mode gives what one full forward of
   the document gives (up to float rounding).

Layer indices are those of :mod:`lmms_probe_tasks.extract.layers`; as in
:func:`~lmms_probe_tasks.extract.site_pass.extract_sites` both passes stop after the
deepest requested layer. Position ids: a decoder that computes its own positions
continues from the cache length; one that is handed explicit ones (Qwen2-VL's
M-RoPE) gets the suffix's continued from the largest prefix position, which is what
the model computes for text after an image.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmms_probe_tasks.extract import families
from lmms_probe_tasks.extract.capture import pooling_mask
from lmms_probe_tasks.extract.layers import DecoderParts
from lmms_probe_tasks.extract.prefix_plan import DocTokens, PrefixBatch
from lmms_probe_tasks.extract.site_pass import image_inputs, run_sites, to_arrays
from lmms_probe_tasks.extract.taps import Taps


@dataclass(frozen=True)
class PrefixState:
    """What the suffixes of a prefix batch need from its prefix pass.

    Attributes:
        cache: The ``DynamicCache`` of the prefixes (batch = groups), filled up to the
            deepest requested layer.
        sums: ``[groups, n_requested_layers, hidden]`` float32 tensor, the pooled sums over the
            prefix positions the pooling mode covers (None when no decoder row is requested).
        counts: ``[groups]`` float32 tensor, how many positions those sums cover.
        next_position: ``[rows, groups]`` int64 tensor, the position id of the first suffix token
            in each position row, when the decoder was handed explicit position ids
            (``rows`` = 3 for M-RoPE, 1 for plain ids); None when it computes its own.
        length: Prefix tokens per group.
        image_sites: What only the prefix sees, per group: ``"projector"`` ``[groups, 1, d]`` and
            ``"vision"`` ``[groups, n_vision_rows, d]`` means, ``"modules"`` module index ->
            ``[groups, d]`` (vision-stream modules: means; decoder modules: sums like ``sums``).
    """

    cache: Any
    sums: Any
    counts: Any
    next_position: Any | None
    length: int
    image_sites: dict = field(default_factory=dict)


def cache_argument(forward: Any) -> str:
    """Return the name under which ``forward`` takes a KV cache.

    Args:
        forward: A model's or decoder's ``forward``.

    Returns:
        ``"past_key_values"`` where that is a named parameter (transformers before the
        rename), else ``"cache"`` (transformers 5.2x; also what a ``**kwargs`` forward passes on).
    """
    parameters = inspect.signature(forward).parameters
    return "past_key_values" if "past_key_values" in parameters and "cache" not in parameters else "cache"


@contextlib.contextmanager
def right_padding(tokenizer: Any) -> Iterator[None]:
    """Pad on the right inside the block, whatever the tokenizer's default (prefix rows must start unpadded).

    Args:
        tokenizer: The processor's tokenizer (left alone if it has no ``padding_side``).
    """
    side = getattr(tokenizer, "padding_side", None)
    if side is not None:
        tokenizer.padding_side = "right"
    try:
        yield
    finally:
        if side is not None:
            tokenizer.padding_side = side


def doc_tokens(inputs: Mapping[str, Any], image_mask: Any, keys: Sequence[str]) -> list[DocTokens]:
    """Read each document's real token ids and image extent from a (padded) processor output.

    Args:
        inputs: Processor output with ``input_ids`` and ``attention_mask`` ``[batch, seq]``
            (padding on either side).
        image_mask: ``[batch, seq]`` bool, True at image positions.
        keys: Per row, the identity of the document's images.

    Returns:
        One :class:`~lmms_probe_tasks.extract.prefix_plan.DocTokens` per row.
    """
    ids = inputs["input_ids"].cpu().numpy()
    real = inputs["attention_mask"].cpu().numpy().astype(bool)
    image = image_mask.cpu().numpy().astype(bool)
    out = []
    for row, key in enumerate(keys):
        positions = np.flatnonzero(image[row][real[row]])
        out.append(
            DocTokens(key, ids[row][real[row]].astype(np.int64), int(positions[-1]) + 1 if positions.size else 0)
        )
    return out


def truncate_inputs(inputs: Mapping[str, Any], length: int) -> dict[str, Any]:
    """Cut a right-padded processor output to its first ``length`` positions.

    Every ``[batch, seq]`` entry aligned with ``input_ids`` (``attention_mask``,
    ``token_type_ids``, ``mm_token_type_ids``, ``image_embeds_position_mask``, ...) is cut;
    image inputs are kept whole.

    Args:
        inputs: The processor output of the groups' first documents.
        length: The prefix length.

    Returns:
        The prefix inputs.

    Raises:
        ValueError: A row has padding within the first ``length`` positions.
    """
    shape = tuple(inputs["input_ids"].shape)
    out = {}
    for name, value in inputs.items():
        aligned = getattr(value, "ndim", 0) == 2 and tuple(value.shape) == shape and not name.startswith("pixel")
        out[name] = value[:, :length] if aligned else value
    if not bool(out["attention_mask"].bool().all()):
        raise ValueError(f"prefix rows must be unpadded over their first {length} tokens: pad on the right")
    return out


def expand_cache(cache: Any, rows: Any) -> Any:
    """Copy a KV cache to one batch row per document; the original is left as it is.

    Args:
        cache: A ``DynamicCache`` with one row per group.
        rows: ``[docs]`` int64 tensor, the group row of each document.

    Returns:
        A new cache whose row ``i`` holds group ``rows[i]``'s keys and values.
    """
    expanded = copy.copy(cache)
    expanded.layers = [copy.copy(layer) for layer in cache.layers]
    expanded.batch_select_indices(rows)  # reassigns each copied layer's tensors
    return expanded


def _continuation(position_ids: Any, groups: int) -> Any | None:
    """``[rows, groups]`` position id after the prefix, from the ids the decoder was handed."""
    if position_ids is None:
        return None
    ids = position_ids if position_ids.ndim == 3 else position_ids[None]
    ids = ids.expand(ids.shape[0], groups, ids.shape[-1])
    after = ids.amax(dim=2) + 1  # [rows, groups]
    # Text after the prefix continues from its largest position, in every M-RoPE row alike
    # (a leading text-position row, as some callers add, continues on its own).
    mrope = slice(1, None) if ids.shape[0] == 4 else slice(None)
    after[mrope] = after[mrope].amax(dim=0)
    return after


def run_prefix(
    model: Any,
    family: families.Family,
    parts: DecoderParts,
    inputs: Mapping[str, Any],
    pooling: str,
    taps: Taps,
    image_mask: Any | None = None,
    images_per_row: Sequence[int] = (),
) -> PrefixState:
    """Run the groups' prefixes through the whole model once, keeping the KV cache and the pooled sums.

    Args:
        model: The transformers model.
        family: Its :class:`~lmms_probe_tasks.extract.families.Family`.
        parts: The probed stack's modules.
        inputs: Processor output of the prefixes (:func:`truncate_inputs`), on the model's device.
        pooling: One of :data:`~lmms_probe_tasks.extract.capture.POOLINGS`.
        taps: What to capture (:class:`~lmms_probe_tasks.extract.taps.Taps`).
        image_mask: ``[groups, P]`` bool, True at image positions (``image``/``text`` pooling,
            the ``projector`` site).
        images_per_row: Images of each group (the ``vision`` site, vision-encoder modules).

    Returns:
        The :class:`PrefixState` the suffixes continue from.
    """
    import torch
    from transformers import DynamicCache

    attention = inputs["attention_mask"]
    if pooling == "last":
        weights = torch.zeros(attention.shape, dtype=torch.float32, device=attention.device)
    else:
        weights = pooling_mask(attention, pooling, image_mask)
    # The image lies wholly in the prefix: its projector mean is final here.
    image_weights, layout = image_inputs(model, inputs, taps, image_mask, images_per_row)
    cache = DynamicCache(config=model.config)
    kwargs = {**families.forward_kwargs(model, family, inputs), "use_cache": True, "return_dict": True}
    kwargs[cache_argument(model.forward)] = cache
    seen: dict[str, Any] = {}

    def keep_positions(module: Any, args: tuple, kwargs: dict) -> None:
        seen["position_ids"] = kwargs.get("position_ids")

    decoder = families.suffix_decoder(model, family)
    handle = decoder.register_forward_pre_hook(keep_positions, with_kwargs=True)
    try:
        captured = run_sites(
            lambda: model(**kwargs), model, parts, taps, weights, stop_at=taps.stop_at,
            image_weights=image_weights, layout=layout, owner=type(model).__name__,
        )  # fmt: skip
    finally:
        handle.remove()
    groups, length = attention.shape
    image_sites = {k: v for k, v in captured.items() if k in ("projector", "vision", "modules")}
    return PrefixState(
        cache, captured.get("language"), weights.sum(dim=1), _continuation(seen.get("position_ids"), groups), length,
        image_sites,
    )  # fmt: skip


def _suffix_inputs(state: PrefixState, rows: Any, suffixes: Sequence[np.ndarray], pad_id: int, device: Any) -> tuple:
    """Right-padded suffix ids, their mask and the decoder's keyword arguments against the expanded cache."""
    import torch

    width = max(len(suffix) for suffix in suffixes)
    ids = torch.full((len(suffixes), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(suffixes), width), dtype=torch.long)
    for i, suffix in enumerate(suffixes):
        ids[i, : len(suffix)] = torch.as_tensor(np.asarray(suffix, dtype=np.int64))
        mask[i, : len(suffix)] = 1
    ids, mask = ids.to(device), mask.to(device)
    kwargs: dict[str, Any] = {
        "input_ids": ids,
        "attention_mask": torch.cat(
            [torch.ones((len(suffixes), state.length), dtype=torch.long, device=device), mask], 1
        ),
        "use_cache": True,
    }
    if state.next_position is not None:
        steps = torch.arange(width, device=device)
        positions = state.next_position.to(device)[:, rows, None] + steps  # [rows, docs, width]
        kwargs["position_ids"] = positions if positions.shape[0] > 1 else positions[0]
    return mask, kwargs


def run_suffixes(
    model: Any,
    family: families.Family,
    parts: DecoderParts,
    state: PrefixState,
    rows: Sequence[int],
    suffixes: Sequence[np.ndarray],
    pooling: str,
    taps: Taps,
    pad_id: int = 0,
    device: Any = None,
) -> dict[str, np.ndarray]:
    """Run documents' suffixes against their groups' prefix cache and return the full documents' pooled features.

    Args:
        model: The transformers model.
        family: Its :class:`~lmms_probe_tasks.extract.families.Family`.
        parts: The probed stack's modules.
        state: The prefix pass of the documents' batch (:func:`run_prefix`).
        rows: Per document, the row of its group in ``state``.
        suffixes: Per document, the ``[seq]`` token ids after the prefix (at least one; no image token).
        pooling: One of :data:`~lmms_probe_tasks.extract.capture.POOLINGS`.
        taps: What the prefix pass captured (:class:`~lmms_probe_tasks.extract.taps.Taps`).
        pad_id: Token id the suffixes are right-padded with (masked out).
        device: Where the token ids go (the embeddings' device); default: that of the prefix sums.

    Returns:
        Site -> ``[docs, rows, d]`` float32 array, as
        :func:`~lmms_probe_tasks.extract.site_pass.extract_sites` gives for the whole documents.

    Raises:
        ValueError: A document would pool over no position.
    """
    import torch

    anchor = state.sums if state.sums is not None else state.counts
    device = device if device is not None else anchor.device
    index = torch.as_tensor(list(rows), dtype=torch.long, device=device)
    out: dict[str, Any] = {k: state.image_sites[k][index.to(state.image_sites[k].device)]
                           for k in ("projector", "vision") if k in state.image_sites}  # fmt: skip
    prefix_modules = state.image_sites.get("modules", {})
    modules = {j: prefix_modules[j][index.to(prefix_modules[j].device)] for j in taps.vision_modules}
    if taps.suffix_needed:
        mask, kwargs = _suffix_inputs(state, index, suffixes, pad_id, device)
        weights = pooling_mask(mask, pooling, torch.zeros_like(mask, dtype=torch.bool))
        decoder = families.suffix_decoder(model, family)
        kwargs[cache_argument(decoder.forward)] = expand_cache(state.cache, index)
        captured = run_sites(
            lambda: decoder(**kwargs), model, parts, taps, weights, stop_at=taps.suffix_stop,
            owner=type(decoder).__name__,
        )  # fmt: skip
        counts = state.counts.to(weights.device)[index.to(weights.device)] + weights.sum(dim=1)
        if bool((counts == 0).any()):
            raise ValueError(f"pooling={pooling!r}: a document has no {pooling} positions to average over")
        if taps.layers:
            sums = captured["language"]
            at = index.to(sums.device)
            out["language"] = (state.sums.to(sums.device)[at] + sums) / counts.to(sums.device)[:, None, None]
        for j in taps.text_modules:
            part = captured["modules"][j]
            at = index.to(part.device)
            modules[j] = (prefix_modules[j].to(part.device)[at] + part) / counts.to(part.device)[:, None]
    return to_arrays({**out, "modules": modules}, taps)


def extract_prefix_batch(
    model: Any,
    family: families.Family,
    parts: DecoderParts,
    inputs: Mapping[str, Any],
    batch: PrefixBatch,
    tokens: Mapping[int, DocTokens],
    pooling: str,
    taps: Taps,
    batch_size: int,
    *,
    images_per_group: Sequence[int] = (),
    pad_id: int = 0,
    device: Any = None,
) -> Iterator[tuple[tuple[int, ...], dict[str, np.ndarray]]]:
    """Run one prefix batch: its prefixes once, then its documents' suffixes ``batch_size`` at a time.

    Args:
        model: The transformers model.
        family: Its :class:`~lmms_probe_tasks.extract.families.Family`.
        parts: The probed stack's modules.
        inputs: Processor output of the groups' first documents, right-padded and cut
            to the prefix (:func:`truncate_inputs`), on the model's device.
        batch: The :class:`~lmms_probe_tasks.extract.prefix_plan.PrefixBatch`.
        tokens: The documents' tokens, by the ids ``batch`` names.
        pooling: One of :data:`~lmms_probe_tasks.extract.capture.POOLINGS`.
        taps: What to capture (:class:`~lmms_probe_tasks.extract.taps.Taps`).
        batch_size: Documents per suffix pass.
        images_per_group: Images of each group's documents (the vision encoder's sites).
        pad_id: Token id the suffixes are right-padded with.
        device: Where the suffix token ids go (the embeddings' device).

    Yields:
        ``(document ids, site -> [len(ids), rows, d] float32 features)`` per suffix pass.
    """
    needs_mask = pooling in ("image", "text") or taps.projector
    image_mask = families.image_positions(model.config, family, inputs) if needs_mask else None
    state = run_prefix(model, family, parts, inputs, pooling, taps, image_mask, images_per_group)
    docs, rows = batch.docs, batch.rows
    for start in range(0, len(docs), batch_size):
        part = docs[start : start + batch_size]
        suffixes = [tokens[doc].tokens[batch.length :] for doc in part]
        step = rows[start : start + batch_size]
        yield part, run_suffixes(model, family, parts, state, step, suffixes, pooling, taps, pad_id, device)
