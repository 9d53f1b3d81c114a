"""Selects and locates the decoder layers to probe: parse ``layers=``, find the stack's modules.

Layer indices follow transformers' ``output_hidden_states`` convention for the
language decoder: index 0 is the decoder's input (token embeddings with the image
features already scattered into the image-token slots), index ``i`` the output of
decoder layer ``i``, and the last index ``L`` the decoder's final output **after the
final norm** (what transformers returns as the last hidden state).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lmms_probe_tasks.extract import families

# Attribute names under which transformers' decoders keep their layer list and final
# norm. Most families use `layers`/`norm`; the others are older naming schemes.
_LAYER_LIST_NAMES = ("layers", "layer", "h", "block", "blocks")
_FINAL_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "layer_norm", "ln_f")


def parse_layers(value: Any, n_layers: int) -> tuple[int, ...]:
    """Parse a ``layers=`` model arg into sorted, unique layer indices in ``0..n_layers``.

    Accepted forms: ``all``; a Python-style range ``start:stop[:step]`` (stop exclusive,
    e.g. ``0:33:4``); a list ``[0,8,16,32]`` (brackets keep lmms-eval's ``--model_args``
    parser from splitting on the commas; ``0;8;16`` also works); a single index.

    Args:
        value: The raw value (lmms-eval turns ``8`` into an int, ``0.5`` into a float).
        n_layers: Number of decoder layers ``L`` (indices run ``0..L``).

    Returns:
        The selected indices.

    Raises:
        ValueError: Bad syntax or an index outside ``0..L``, naming both.
    """
    valid = f"valid: 0–{n_layers} (0 = embeddings, {n_layers} = last layer after the final norm)"
    text = str(value).strip().strip("[]()").replace(" ", "")
    if text in ("", "all"):
        return tuple(range(n_layers + 1))
    try:
        if ":" in text:
            parts = [int(p) if p else None for p in text.split(":")]
            if len(parts) > 3:
                raise ValueError
            picked = list(range(n_layers + 1)[slice(*parts)])
            if not picked:
                raise ValueError(f"layers={value!r} selects no layer for a {n_layers}-layer model; {valid}")
            return tuple(picked)
        picked = [int(float(p)) for p in re.split(r"[,;]", text) if p]
    except ValueError as exc:
        if "selects no layer" in str(exc):
            raise
        raise ValueError(
            f"layers={value!r} is not understood; use all, a range like 0:33:4, or a list like "
            "[0,8,16,32] (quote --model_args in the shell: --model_args 'pretrained=...,layers=[0,8,16]')"
        ) from None
    bad = [i for i in picked if not 0 <= i <= n_layers]
    if bad:
        raise ValueError(f"layer {bad[0]} out of range for a {n_layers}-layer model; {valid}")
    return tuple(sorted(set(picked)))


@dataclass(frozen=True)
class DecoderParts:
    """The modules of a language decoder that the hooks attach to.

    Attributes:
        layers: The decoder layers, in order (``L`` of them).
        norm: The final norm (its output is layer index ``L``), or None if the
            decoder has none (then index ``L`` is the last layer's raw output).
    """

    layers: Sequence[Any]
    norm: Any | None


def find_decoder(model: Any, family: Any = None) -> DecoderParts:
    """Locate the probed stack's layers and final norm.

    Uses the family table's paths (:mod:`lmms_probe_tasks.extract.families`; by default
    ``get_decoder().layers`` / ``get_decoder().norm``, transformers' own API), and for
    decoders laid out otherwise looks for the layer list and final norm by their
    conventional attribute names.

    Args:
        model: The transformers model (a weightless ``meta`` copy will do).
        family: Its family entry; looked up from ``model.config`` when omitted.

    Returns:
        The layer list and final norm.

    Raises:
        ValueError: The layers cannot be found (names the model class).
    """
    import torch

    family = family or families.lookup(model.config)
    try:
        layers, norm = families.decoder_layers(model, family), families.final_norm(model, family)
        if isinstance(layers, torch.nn.ModuleList) and isinstance(norm, torch.nn.Module):
            return DecoderParts(layers=layers, norm=norm)
    except AttributeError:
        pass
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = next(
        (getattr(decoder, n) for n in _LAYER_LIST_NAMES if isinstance(getattr(decoder, n, None), torch.nn.ModuleList)),
        None,
    )
    if layers is None:
        raise ValueError(
            f"{type(model).__name__}: no decoder layer list found (tried the family table and "
            f"get_decoder().{{{', '.join(_LAYER_LIST_NAMES)}}}); "
            "add the family to lmms_probe_tasks.extract.families.FAMILIES"
        )
    norm = next(
        (getattr(decoder, n) for n in _FINAL_NORM_NAMES if isinstance(getattr(decoder, n, None), torch.nn.Module)), None
    )
    return DecoderParts(layers=layers, norm=norm)
