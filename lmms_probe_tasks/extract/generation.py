"""Answers a non-probe request with greedy text, so probing joins an existing eval suite in one run."""

from __future__ import annotations

from typing import Any

from lmms_probe_tasks.extract.families import Family


def stop_sequences(gen_kwargs: dict[str, Any]) -> list[str]:
    """Return the ``until`` strings of a request's ``generation_kwargs`` as a list.

    Args:
        gen_kwargs: The request's generation arguments.
    """
    until = gen_kwargs.get("until") or []
    return [until] if isinstance(until, str) else list(until)


def greedy_generate(
    model: Any, tokenizer: Any, family: Family, inputs: Any, max_new_tokens: int, until: list[str]
) -> str:
    """Generate greedily from one prompt and cut the text at the first stop sequence.

    Args:
        model: The transformers model.
        tokenizer: Its tokenizer (for the pad id and decoding).
        family: The model's :class:`~lmms_probe_tasks.extract.families.Family`.
        inputs: The processor output for one document, on the model's device.
        max_new_tokens: Generation length.
        until: Stop sequences (the text is cut before the first one).

    Returns:
        The answer, without the prompt and special tokens.
    """
    import torch

    inputs = {k: v for k, v in inputs.items() if k not in family.drop_inputs}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.inference_mode():
        out = model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, pad_token_id=pad_id)
    # Decoder-only models echo the prompt; an encoder-decoder's output is only the answer.
    start = 0 if family.decoder_input_ids else inputs["input_ids"].shape[1]
    text = tokenizer.decode(out[0, start:], skip_special_tokens=True)
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text
