"""Captures one pooled vector per requested layer from a forward pass (hooks and pooling).

Instead of asking the model for every layer's full ``[batch, seq, hidden]`` tensor,
hooks on the decoder pool each layer the moment it is produced (in float32) and keep
only ``[batch, hidden]``; the forward pass is stopped right after the deepest requested
layer, so deeper layers and the language-model head are never computed. Layer indices
are those of :mod:`lmms_probe_tasks.extract.layers` (0 = embeddings, ``L`` = after the
final norm).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from lmms_probe_tasks.extract.layers import DecoderParts

POOLINGS: tuple[str, ...] = ("last", "mean", "image", "text")
POOLING_HELP = (
    "last = state at the final prompt position, mean = mean over non-padding positions, "
    "image = mean over the image-token positions, text = mean over the non-image, non-padding positions"
)


def check_pooling(pooling: str) -> str:
    """Validate a ``pooling=`` value.

    Args:
        pooling: The raw value.

    Returns:
        ``pooling``, one of :data:`POOLINGS`.

    Raises:
        ValueError: Naming the value and the valid set.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r} is not supported; valid: {', '.join(POOLINGS)} ({POOLING_HELP})")
    return pooling


def pooling_mask(attention_mask: Any, pooling: str, image_mask: Any | None = None) -> Any:
    """Turn a pooling mode into the 0/1 mask of the positions it averages over (unnormalised).

    Weighted by it, :func:`pool` gives per-layer *sums*; the shared-prefix path adds a
    prefix's sums to its suffixes' and divides by the joint count.

    Args:
        attention_mask: ``[batch, seq]`` 0/1 tensor (padding on either side).
        pooling: One of :data:`POOLINGS`.
        image_mask: ``[batch, seq]`` bool tensor, True at image-token positions
            (required for ``image`` and ``text``).

    Returns:
        ``[batch, seq]`` float32 tensor of 0s and 1s (``last``: one 1 per non-empty row).
    """
    import torch

    mask = attention_mask.float()
    if pooling == "last":
        # The last 1 in each row: right for left and right padding alike.
        last = mask.shape[1] - 1 - mask.flip(1).argmax(dim=1)
        weights = torch.zeros_like(mask)
        weights[torch.arange(mask.shape[0]), last] = mask[torch.arange(mask.shape[0]), last]
        return weights
    if pooling in ("image", "text"):
        image = image_mask.float() * mask
        mask = image if pooling == "image" else mask - image
    return mask


def pooling_weights(attention_mask: Any, pooling: str, image_mask: Any | None = None) -> Any:
    """Turn a pooling mode into per-position weights that sum to 1 per row.

    Args:
        attention_mask: ``[batch, seq]`` 0/1 tensor (padding on either side).
        pooling: One of :data:`POOLINGS`.
        image_mask: ``[batch, seq]`` bool tensor, True at image-token positions
            (required for ``image`` and ``text``).

    Returns:
        ``[batch, seq]`` float32 tensor.

    Raises:
        ValueError: A row has no position to pool over (e.g. no image token).
    """
    mask = pooling_mask(attention_mask, pooling, image_mask)
    counts = mask.sum(dim=1, keepdim=True)
    if (counts == 0).any():
        raise ValueError(f"pooling={pooling!r}: a document has no {pooling} positions to average over")
    return mask / counts


def pool(hidden: Any, weights: Any) -> Any:
    """Pool ``[batch, seq, hidden]`` states with ``[batch, seq]`` weights into ``[batch, hidden]`` float32.

    Args:
        hidden: One layer's states, any float dtype, on any device.
        weights: :func:`pooling_weights` of the batch (moved to ``hidden``'s device).

    Returns:
        The pooled float32 tensor.
    """
    return (hidden.float() * weights.to(hidden.device).unsqueeze(-1)).sum(dim=1)


class StopForward(Exception):
    """Raised inside the deepest needed hook: nothing after that layer is computed."""


@contextlib.contextmanager
def layer_capture(
    parts: DecoderParts,
    layers: Sequence[int],
    weights: Any,
    *,
    stop_at: int | None = None,
    image_weights: Any | None = None,
) -> Iterator[dict[Any, Any]]:
    """Install hooks that pool the requested layers as they are produced; always removed.

    Args:
        parts: The decoder's modules.
        layers: Requested indices in ``0..L`` (may be empty when only ``stop_at`` matters).
        weights: ``[batch, seq]`` pooling weights (see :func:`pooling_weights`).
        stop_at: The index after which the pass stops (default: the deepest requested layer).
        image_weights: ``[batch, seq]`` weights over the image positions: the decoder's input
            pooled with them is kept under ``"projector"`` (the ``projector`` site).

    Yields:
        A dict filled during the forward pass: layer index -> ``[batch, hidden]`` float32
        (and ``"projector"`` -> ``[batch, hidden]`` with ``image_weights``).
    """
    n_layers = len(parts.layers)
    wanted = set(layers)
    deepest = stop_at if stop_at is not None else max(layers)
    captured: dict[Any, Any] = {}

    def store(index: int, hidden: Any) -> None:
        if isinstance(hidden, tuple):  # decoder layers return a tuple before transformers 4.54
            hidden = hidden[0]
        if hidden.shape[1] != weights.shape[1]:
            raise ValueError(
                f"decoder sequence length {hidden.shape[1]} differs from the prompt's {weights.shape[1]} tokens; "
                "this family changes the sequence inside the model and needs an adapter"
            )
        if index in wanted:
            captured[index] = pool(hidden, weights)
        if index == 0 and image_weights is not None:
            captured["projector"] = pool(hidden, image_weights)
        if index == deepest:
            raise StopForward

    def embeddings_hook(module: Any, args: tuple, kwargs: dict) -> None:
        store(0, kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])

    def output_hook(index: int) -> Any:
        return lambda module, args, output: store(index, output)

    handles = [parts.layers[0].register_forward_pre_hook(embeddings_hook, with_kwargs=True)]
    for index in range(1, n_layers):
        handles.append(parts.layers[index - 1].register_forward_hook(output_hook(index)))
    # Index L is after the final norm (transformers' convention); without a norm, the last layer's output.
    last_module = parts.norm if parts.norm is not None else parts.layers[n_layers - 1]
    handles.append(last_module.register_forward_hook(output_hook(n_layers)))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()
