"""Extracts one pooled vector per layer from an image-text model (the only torch-model code).

Conventions (transformers' ``output_hidden_states``): row 0 is the decoder's input
embeddings (image features already scattered into the image-token slots), row ``i``
the output of decoder layer ``i``; the last row is what transformers returns for the
last layer, i.e. **after the final norm**. Pooling happens in float32 and the result
is stored as float16.
"""

from __future__ import annotations

from typing import Any

import numpy as np

POOLINGS: tuple[str, ...] = ("last", "mean")


def check_pooling(pooling: str) -> str:
    """Validate a ``pooling=`` value.

    Raises:
        ValueError: Naming the value and the valid set.
    """
    if pooling not in POOLINGS:
        raise ValueError(
            f"pooling={pooling!r} is not supported; valid: {', '.join(POOLINGS)} "
            "(last = state at the final prompt position, mean = mean over non-padding positions)"
        )
    return pooling


def pool(hidden: Any, attention_mask: Any, pooling: str) -> Any:
    """Pool one layer's hidden states over the sequence.

    Args:
        hidden: ``[batch, seq, hidden]`` torch tensor, any float dtype.
        attention_mask: ``[batch, seq]`` 0/1 tensor (padding on either side).
        pooling: ``last`` (last non-padding position) or ``mean`` (mean over non-padding positions).

    Returns:
        ``[batch, hidden]`` float32 tensor.
    """
    import torch

    hidden = hidden.float()
    mask = attention_mask.to(hidden.device)
    if pooling == "last":
        # Index of the last 1 in each row: works for left and right padding alike.
        last = mask.shape[1] - 1 - mask.flip(1).float().argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def extract_batch(model: Any, inputs: Any, pooling: str) -> np.ndarray:
    """Run one forward pass and return every layer's pooled state.

    Args:
        model: A transformers image-text model (``AutoModelForImageTextToText``).
        inputs: Processor output for the batch (``input_ids``, ``attention_mask``,
            ``pixel_values``, ...), already on the model's device.
        pooling: See :func:`pool`.

    Returns:
        ``[batch, n_layers + 1, hidden]`` float16 array.
    """
    import torch

    kwargs = {"output_hidden_states": True, "use_cache": False, "return_dict": True}
    # The LM head over the whole sequence (seq x vocab floats) is pure waste for probing.
    if _accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = 1
    with torch.inference_mode():
        out = model(**inputs, **kwargs)
        pooled = [pool(h, inputs["attention_mask"], pooling) for h in out.hidden_states]
    return torch.stack(pooled, dim=1).cpu().numpy().astype(np.float16)


def _accepts(model: Any, name: str) -> bool:
    import inspect

    return name in inspect.signature(model.forward).parameters
