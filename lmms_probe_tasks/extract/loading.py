"""Loads what a ``pretrained=`` checkpoint names: its config, processor and weights, with clear errors.

The config and processor load at once (they are small and every check needs them);
the weights load lazily, on the first document the feature cache does not hold, so a
fully cached re-probe never reads them. :func:`check_decoder` finds the probed stack on
a weightless copy first, so a family whose layers cannot be found fails before any data
work instead of after it.
"""

from __future__ import annotations

import os
from typing import Any

from loguru import logger

from lmms_probe_tasks.extract.families import Family
from lmms_probe_tasks.extract.layers import find_decoder

_FIX = (
    "Fix: give an existing checkpoint folder (config.json inside) or a hub id such as "
    "llava-hf/llava-1.5-7b-hf (with network access or a filled HF cache)."
)


def load_config(pretrained: str, revision: str, trust_remote_code: bool) -> Any:
    """Load the config, turning hub/disk failures and wrong model kinds into one clear error.

    Args:
        pretrained: Hub id or local folder.
        revision: Hub revision.
        trust_remote_code: Whether checkpoint code may run.

    Returns:
        The transformers config of an image-text model.

    Raises:
        ValueError: The checkpoint cannot be loaded, needs ``trust_remote_code``, or is not
            an ``AutoModelForImageTextToText`` model (each with the fix).
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    looks_local = pretrained.startswith((".", "/", "~"))  # hub ids never start so
    if looks_local and not os.path.isdir(os.path.expanduser(pretrained)):
        raise ValueError(f"pretrained={pretrained!r}: no such checkpoint folder. {_FIX}")
    try:
        config = AutoConfig.from_pretrained(pretrained, revision=revision, trust_remote_code=trust_remote_code)
    except Exception as exc:  # OSError, ValueError, HF errors: all mean "cannot load that name"
        if "trust_remote_code" in str(exc) and not trust_remote_code:
            raise ValueError(
                f"pretrained={pretrained!r} ships its own model code, which is not run unless you allow it. "
                "Fix: add trust_remote_code=true to --model_args if you trust that checkpoint's code."
            ) from None
        where = "local folder" if os.path.isdir(pretrained) else "hub id or local folder"
        raise ValueError(
            f"pretrained={pretrained!r} could not be loaded as a {where}: {str(exc).splitlines()[0]} {_FIX}"
        ) from None
    model_type = getattr(config, "model_type", None)
    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES and not trust_remote_code:
        raise ValueError(
            f"pretrained={pretrained!r} is a {model_type!r} checkpoint, not an image-text model: "
            "the hidden_states model needs a checkpoint loadable with AutoModelForImageTextToText "
            f"(e.g. {', '.join(sorted(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)[:8])}, ...)."
        )
    return config


def build_skeleton(config: Any, trust_remote_code: bool) -> Any:
    """The architecture built from its config alone, on the ``meta`` device (no weights read).

    It is the class :func:`load_weights` loads (``AutoModelForImageTextToText``), so its
    ``named_modules()`` are the loaded model's names.

    Args:
        config: The checkpoint's config.
        trust_remote_code: Whether checkpoint code may run.

    Returns:
        The weightless model.

    Raises:
        ValueError: transformers cannot build the architecture (names the model type and the fix).
    """
    import torch
    from transformers import AutoModelForImageTextToText

    try:
        # Parameters on the meta device have shapes but no storage: nothing is allocated or read.
        with torch.device("meta"):
            return AutoModelForImageTextToText.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as exc:  # whatever transformers raises, the fix is the same: this checkpoint's architecture
        raise ValueError(
            f"transformers cannot build the {getattr(config, 'model_type', '?')!r} architecture from its config "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}). Fix: upgrade transformers, or pass "
            "trust_remote_code=true if the checkpoint ships its own code."
        ) from exc


def check_decoder(config: Any, family: Family, trust_remote_code: bool) -> Any | None:
    """Find the probed stack on a weightless copy of the architecture (``meta`` device).

    Args:
        config: The checkpoint's config.
        family: Its :class:`~lmms_probe_tasks.extract.families.Family`.
        trust_remote_code: Whether checkpoint code may run.

    Returns:
        The weightless copy (:func:`build_skeleton`), for further checks at start; None when
        transformers cannot build it (then the load reports it).

    Raises:
        ValueError: Naming the model type and what was looked for.
    """
    try:
        skeleton = build_skeleton(config, trust_remote_code)
    except ValueError as exc:  # an architecture transformers cannot build is reported at load time instead
        logger.debug(f"skipping the early decoder check for {config.model_type!r}: {exc}")
        return None
    find_decoder(skeleton, family)
    return skeleton


def load_processor(pretrained: str, revision: str, trust_remote_code: bool) -> Any:
    """Load the processor, its tokenizer set to pad on the right.

    Right padding: real tokens keep positions ``0..n-1``, so a causal decoder gives each
    document the same states alone or in a batch; pooling reads the attention mask.

    Args:
        pretrained: Hub id or local folder.
        revision: Hub revision.
        trust_remote_code: Whether checkpoint code may run.

    Returns:
        The ``AutoProcessor`` of the checkpoint.
    """
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(pretrained, revision=revision, trust_remote_code=trust_remote_code)
    getattr(processor, "tokenizer", processor).padding_side = "right"
    return processor


def load_weights(pretrained: str, config: Any, load_kwargs: dict[str, Any], init: str, seed: int) -> Any:
    """Load the weights, or build the same architecture with random ones (the probing control).

    Args:
        pretrained: Hub id or local folder.
        config: The checkpoint's config.
        load_kwargs: ``from_pretrained`` arguments (``revision``, ``dtype``,
            ``trust_remote_code``, maybe ``device_map``).
        init: ``pretrained``, or ``random``: fresh weights seeded by ``seed`` (no
            ``device_map``; the caller moves the model).
        seed: Seed of the random initialisation (the global RNG is left as it was).

    Returns:
        The model, in eval mode.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    if init == "random":
        # Same architecture and config, fresh weights: what probing results must beat.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForImageTextToText.from_config(
                config, dtype=load_kwargs["dtype"], trust_remote_code=load_kwargs["trust_remote_code"]
            )
    else:
        model = AutoModelForImageTextToText.from_pretrained(pretrained, **load_kwargs)
    return model.eval()
