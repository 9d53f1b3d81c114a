"""Validates the ``hidden_states`` model args and describes the extraction they set up.

The checks here need at most the checkpoint's config, so a bad argument fails before
any weights load; :func:`extraction_meta` is what every result records about how the
features were made, and :func:`cache_fingerprint` what keys them in the feature cache.
"""

from __future__ import annotations

import hashlib
from typing import Any

from lmms_probe_tasks.extract.families import Family
from lmms_probe_tasks.extract.prompts import prompt_format

#: Every ``--model_args`` key of ``--model hidden_states``, in the order the docs list them.
MODEL_ARGS: tuple[str, ...] = (
    "pretrained", "revision", "dtype", "device", "device_map", "batch_size", "pooling", "layers", "init",
    "seed", "blind", "share_prefix", "feature_cache", "trust_remote_code", "max_new_tokens",
)  # fmt: skip
DTYPES: tuple[str, ...] = ("auto", "float32", "float16", "bfloat16")
INITS: tuple[str, ...] = ("pretrained", "random")
#: Meta keys that determine the features (with the config hash, revision and versions).
_FINGERPRINT_KEYS = ("model", "model_type", "dtype", "init", "pooling", "layers", "blind", "stack")
#: Meta keys that describe how the features were computed but not what they are: kept out
#: of the fingerprint, so a run reuses features cached by a run with other values.
#: ``share_prefix`` gives the same features (tested to float rounding) either way.
_NOT_FINGERPRINTED = ("share_prefix",)
FLAGS: dict[str, bool] = {"true": True, "false": False}


def check_model_args(unknown: dict[str, Any]) -> None:
    """Refuse model args the wrapper does not take.

    Args:
        unknown: The ``**kwargs`` left over after the named parameters.

    Raises:
        ValueError: Naming the unknown keys and the valid ones.
    """
    if unknown:
        raise ValueError(
            f"unknown model_args {sorted(unknown)} for --model hidden_states; valid: {', '.join(MODEL_ARGS)}"
        )


def check_choice(name: str, value: str, valid: tuple[str, ...], note: str = "") -> str:
    """Validate a model arg with a fixed set of values.

    Args:
        name: The arg's name (``init``, ``blind``, ...).
        value: The value given.
        valid: The allowed values.
        note: Appended to the error, e.g. what a value means.

    Returns:
        ``value``.

    Raises:
        ValueError: Naming the value and the valid set.
    """
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not supported; valid: {', '.join(valid)}{note}")
    return value


def check_flag(name: str, value: bool | str) -> bool:
    """Validate a true/false model arg (lmms-eval passes ``true``/``false`` as bools, anything else as a string).

    Args:
        name: The arg's name (``share_prefix``, ...).
        value: The value given.

    Returns:
        The boolean.

    Raises:
        ValueError: Naming the value and the valid set.
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in FLAGS:
        raise ValueError(f"{name}={value!r} is not supported; valid: {', '.join(FLAGS)}")
    return FLAGS[text]


def check_batch_size(value: int | str) -> int:
    """Parse ``batch_size`` (lmms-eval passes it as a string).

    Args:
        value: The raw value.

    Returns:
        Documents per forward pass.

    Raises:
        ValueError: Not a positive integer.
    """
    size = int(value)
    if size < 1:
        raise ValueError(f"batch_size={value!r} must be a positive integer")
    return size


def check_image_pooling(pooling: str, config: Any, family: Family, blind: str) -> None:
    """Refuse ``image``/``text`` pooling where no sequence position holds image features.

    Args:
        pooling: The validated ``pooling=`` value.
        config: The checkpoint's config.
        family: Its :class:`~lmms_probe_tasks.extract.families.Family`.
        blind: The validated ``blind=`` value.

    Raises:
        ValueError: Naming why and the poolings valid here.
    """
    if pooling not in ("image", "text"):
        return
    no_positions = family.image_positions == "cross_attention" or (
        family.image_positions == "image_token_id" and getattr(config, "image_token_id", None) is None
    )
    if not (no_positions or blind == "noimage"):
        return
    why = (
        "blind=noimage puts no image in the prompt"
        if blind == "noimage"
        else f"no sequence position of a {config.model_type!r} model holds image features"
    )
    raise ValueError(f"pooling={pooling!r} needs image-token positions, but {why}; valid here: last, mean")


def resolve_dtype(dtype: str, device: str) -> Any:
    """Turn a ``dtype=`` model arg into a torch dtype.

    Args:
        dtype: One of :data:`DTYPES` (``auto``: bfloat16 on a GPU, float32 on CPU).
        device: The device the model will run on.

    Returns:
        A ``torch.dtype``.

    Raises:
        ValueError: Naming the value and the valid set.
    """
    import torch

    check_choice("dtype", dtype, DTYPES)
    if dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def extraction_meta(
    pretrained: str,
    revision: str,
    config: Any,
    torch_dtype: Any,
    *,
    init: str,
    seed: int,
    pooling: str,
    layers: tuple[int, ...],
    blind: str,
    family: Family,
    processor: Any,
    share_prefix: bool = False,
) -> dict[str, Any]:
    """Describe how the features are made: recorded in every result (``config.extraction``).

    Args:
        pretrained: Hub id or folder of the checkpoint.
        revision: Hub revision asked for.
        config: The checkpoint's config.
        torch_dtype: The resolved dtype.
        init: ``pretrained`` or ``random``.
        seed: Seed of the random initialisation.
        pooling: The pooling mode.
        layers: The extracted layer indices.
        blind: The modality baseline.
        family: The checkpoint's family entry.
        processor: The checkpoint's processor (for the prompt layout).
        share_prefix: Whether documents of one image may run their common prompt prefix
            once (the ``share_prefix`` arg and the family's
            :attr:`~lmms_probe_tasks.extract.families.Family.prefix_sharing` both on).

    Returns:
        JSON-ready settings, key order as in the artifacts.
    """
    text_config = config.get_text_config()
    return {
        "model": pretrained,
        "revision": str(revision),
        "model_type": config.model_type,
        "dtype": str(torch_dtype).replace("torch.", ""),
        "init": init if init == "pretrained" else f"random (seed {int(seed)})",
        "pooling": pooling,
        "n_layers": int(text_config.num_hidden_layers),
        "layers": list(layers),
        "hidden_size": int(text_config.hidden_size),
        "layer_0": "input embeddings of the language decoder (image features in place)",
        "last_layer": "decoder output after the final norm (transformers' hidden_states convention)",
        "blind": blind,
        "share_prefix": bool(share_prefix),
        "stack": family.stack,
        "prompt_format": prompt_format(processor, family),
        "family_notes": family.notes,
    }


def cache_fingerprint(meta: dict[str, Any], config: Any, revision: str) -> dict[str, Any]:
    """Everything about the model and extraction settings that keys a document's cached features.

    The weights enter through ``meta["weights"]``
    (:func:`~lmms_probe_tasks.extract.weights_id.weights_identity`: a local folder's
    weight-file fingerprint, a hub id's resolved commit), the storage layout through
    :data:`~lmms_probe_tasks.transport.feature_cache.CACHE_FORMAT`. Settings that change
    how features are computed but not their values (``share_prefix``) stay out, so
    cached documents are reused across them.

    Args:
        meta: :func:`extraction_meta` of the run, with its ``weights`` entry set.
        config: The checkpoint's config (hashed: a local edit changes the key).
        revision: Hub revision asked for (recorded; the weights identity is what keys).

    Returns:
        JSON-ready fingerprint for :func:`lmms_probe_tasks.transport.doc_key`.
    """
    from transformers import __version__ as transformers_version

    from lmms_probe_tasks import __version__
    from lmms_probe_tasks.transport.feature_cache import CACHE_FORMAT

    return {
        **{key: meta[key] for key in _FINGERPRINT_KEYS},
        "cache_format": CACHE_FORMAT,
        "weights": meta["weights"],
        "revision": str(revision),
        "config_sha256": hashlib.sha256(config.to_json_string(use_diff=False).encode()).hexdigest(),
        "versions": {"lmms-probe-tasks": __version__, "transformers": transformers_version},
    }
