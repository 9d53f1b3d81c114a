"""The ``vision`` site: one pooled vector per hidden state of the model's vision encoder, per document.

Rows follow the encoder's own ``output_hidden_states=True`` convention: row 0 is the
input of the first encoder block (the embeddings, after any pre-norm such as CLIP's
``pre_layrnorm``), row ``k`` the output of block ``k``; never the post-layernorm and
always before any feature-layer selection (LLaVA's ``vision_feature_layer=-2``). Each
row is the MEAN over all positions (CLS included where the encoder has one) of all
tiles or crops of all of a document's images; padding (all-zero tiles, padded patches,
empty media slots) is left out, so a document's rows do not depend on its batch.

:data:`VISION` says, per :func:`~lmms_probe_tasks.extract.families.family_key`, where the
encoder's blocks are and how its block outputs map to documents (a :class:`VisionSite`),
or why a family is not supported. The encoder runs inside the normal ``model(**inputs)``
forward: :func:`vision_capture` hooks its blocks (pre-hook on the first for row 0) and
pools each block's output the moment it is produced (:func:`pool_vision`, with the
:class:`VisionLayout` of the batch from :func:`vision_layout`, in
:mod:`lmms_probe_tasks.extract.vision_layout`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from lmms_probe_tasks.extract.capture import StopForward
from lmms_probe_tasks.extract.vision_layout import LAYOUTS, VisionLayout, pool_vision, vision_layout

#: The sites every family has besides ``vision`` (named in :func:`check_vision`'s error).
OTHER_SITES: tuple[str, ...] = ("language", "projector")


@dataclasses.dataclass(frozen=True)
class VisionSite:
    """Where one family's vision encoder is and how its block outputs map to documents.

    Attributes:
        encoder: Dotted path (and ``named_modules()`` name) of the encoder, from the
            ``AutoModelForImageTextToText`` model; everything under it is on the vision stream.
        blocks: Dotted paths of the encoder's block lists, in the order they run
            (concatenated; two for Mllama's local + global encoders).
        layout: A key of :data:`LAYOUTS`.
        cls: Whether each tile's sequence starts with a CLS position (it is averaged too).
        towers: The ``vision_config.model_type`` values this entry was checked on.
        depth: ``vision_config`` attributes whose sum is the number of blocks.
        notes: Recorded in results.
    """

    encoder: str
    blocks: tuple[str, ...]
    layout: str
    cls: bool
    towers: tuple[str, ...]
    depth: tuple[str, ...] = ("num_hidden_layers",)
    notes: str = ""


_ANYRES = (
    "anyres: the base image + its grid tiles (count from image_sizes and image_grid_pinpoints) all run through "
    "the tower; all positions of all tiles averaged, the batch's padding tiles left out"
)
_IDEFICS = (
    "SigLIP-style tower over the tiles + global view of each image; the batch's all-zero padding tiles are "
    "dropped (as the model does) and padded patches (pixel_attention_mask) left out of the mean"
)
_QWEN = (
    "packed ViT: blocks see [total_patches, d] (cu_seqlens), t*h*w patches per image from image_grid_thw "
    "(before the 2x2 merger); all patches averaged"
)
_MLLAMA = (
    "rows 1..L: local encoder blocks, L+1..L+G: global (gated) blocks, whose input is the local output after "
    "layernorm_post + the post-tile embedding; CLS + patches of each real tile averaged, padding tiles, empty "
    "media slots and the 8-alignment padding patches left out (real patches do attend to padding tiles)"
)
# CLIPVisionModel and SiglipVisionModel both keep encoder.layers; a Pixtral tower (packed,
# block-diagonal attention) is another layout, which check_vision refuses.
_LLAVA_TOWERS = ("clip_vision_model", "siglip_vision_model")


def _tower(layout: str, cls: bool, towers: tuple[str, ...], notes: str) -> VisionSite:
    """A tower at ``model.vision_tower`` (CLIP/SigLIP: LLaVA, PaliGemma, Gemma 3)."""
    return VisionSite("model.vision_tower", ("model.vision_tower.encoder.layers",), layout, cls, towers, notes=notes)


def _visual(tower: str, notes: str) -> VisionSite:
    """Qwen's packed ViT at ``model.visual`` (``vision_config.depth`` blocks)."""
    return VisionSite("model.visual", ("model.visual.blocks",), "packed", False, (tower,), ("depth",), notes)


def _tiles(tower: str) -> VisionSite:
    """Idefics3/SmolVLM's tile encoder at ``model.vision_model``."""
    return VisionSite(
        "model.vision_model", ("model.vision_model.encoder.layers",), "tiles", False, (tower,), notes=_IDEFICS
    )


def _vit(blocks: str, tower: str, notes: str) -> VisionSite:
    """A CLS ViT at ``vision_model``, one image per document (Kosmos-2, InstructBLIP)."""
    return VisionSite("vision_model", (f"vision_model.{blocks}",), "images", True, (tower,), notes=notes)


#: family key -> its vision site, or the reason it has none.
VISION: dict[str, VisionSite | str] = {
    "llava": _tower("images", True, _LLAVA_TOWERS, "CLS + patches (CLIP) or patches (SigLIP); all averaged"),
    "llava_next": _tower("anyres", True, _LLAVA_TOWERS, _ANYRES),
    "llava_next_video": _tower("anyres", True, _LLAVA_TOWERS, _ANYRES + "; images only"),
    "llava_onevision": _tower(
        "anyres", False, _LLAVA_TOWERS, _ANYRES + " (multi-image rows: one tile per image, per batch_num_images)"
    ),
    "qwen2_vl": _visual("qwen2_vl_vision", _QWEN),
    "qwen2_5_vl": _visual("qwen2_5_vl_vision", _QWEN + "; window attention permutes patches within an image"),
    "qwen3_vl": _visual("qwen3_vl_vision", _QWEN + "; row 0 includes the position embeddings; deepstack reads rows"),
    "idefics3": _tiles("idefics3_vision"),
    "smolvlm": _tiles("smolvlm_vision"),
    "paligemma": _tower("images", False, ("siglip_vision_model",), "SigLIP ViT: patches (no CLS), all averaged"),
    "gemma3": _tower("images", False, ("siglip_vision_model",), "SigLIP ViT: patches (no CLS); no pan-and-scan crops"),
    "mllama": VisionSite(
        "model.vision_model",
        ("model.vision_model.transformer.layers", "model.vision_model.global_transformer.layers"),
        "media_tiles",
        True,
        ("mllama_vision_model",),
        ("num_hidden_layers", "num_global_layers"),
        _MLLAMA,
    ),
    "kosmos-2": _vit("model.encoder.layers", "kosmos_2_vision_model", "CLIP ViT: CLS + patches, all averaged"),
    "instructblip": _vit("encoder.layers", "instructblip_vision_model", "EVA ViT (before the Q-Former): CLS + patches"),
    "instructblip+t5": _vit("encoder.layers", "instructblip_vision_model", "as instructblip: the ViT ignores the text"),
}


def check_vision(config: Any, family_key: str) -> VisionSite:
    """Return the family's :class:`VisionSite`, or raise naming the reason and the sites it has.

    Args:
        config: The model config; its ``vision_config.model_type`` must be one of the
            site's :attr:`VisionSite.towers` (e.g. a LLaVA with a Pixtral tower is refused).
        family_key: :func:`~lmms_probe_tasks.extract.families.family_key` of ``config``.

    Returns:
        The site.

    Raises:
        ValueError: One line: the family, why, and ``this family has sites: language, projector``.
    """
    site = VISION.get(family_key)
    if isinstance(site, VisionSite):
        tower = getattr(getattr(config, "vision_config", None), "model_type", None)
        if tower in site.towers:
            return site
        reason = (
            f"vision tower {tower!r} is not one of {', '.join(site.towers)}, the towers whose block outputs "
            "this site maps to documents"
        )
    else:
        reason = site if isinstance(site, str) else "not in lmms_probe_tasks.extract.vision.VISION"
    raise ValueError(
        f"sites=vision is not available for {family_key!r} ({reason}); this family has sites: {', '.join(OTHER_SITES)}"
    )


def vision_depth(config: Any, family_key: str) -> int:
    """Number of vision rows (encoder blocks + 1) from the config alone, for naming rows before any forward.

    Args:
        config: The model config (``config.vision_config`` is read).
        family_key: Its family key.

    Returns:
        ``sum(vision_config.<site.depth>) + 1``.

    Raises:
        ValueError: The family (or its tower) has no vision site.
    """
    site = check_vision(config, family_key)  # the checked towers all have these attributes
    return sum(int(getattr(config.vision_config, name)) for name in site.depth) + 1


def _resolve(model: Any, path: str) -> Any:
    from lmms_probe_tasks.extract.families import resolve

    try:
        return resolve(model, path)
    except AttributeError as exc:
        raise ValueError(
            f"{type(model).__name__} has no module at {path!r} ({exc}); load the checkpoint with "
            "AutoModelForImageTextToText or fix lmms_probe_tasks.extract.vision.VISION"
        ) from None


def vision_blocks(model: Any, site: VisionSite) -> list[Any]:
    """Return the encoder's blocks, in the order they run.

    Args:
        model: The transformers model.
        site: Its :class:`VisionSite`.
    """
    return [block for path in site.blocks for block in _resolve(model, path)]


def vision_prefix(model: Any, site: VisionSite) -> str:
    """Return the encoder's ``named_modules()`` name (modules under it are on the vision stream).

    Args:
        model: The transformers model.
        site: Its :class:`VisionSite`.
    """
    _resolve(model, site.encoder)  # raises where the path does not exist
    return site.encoder


@contextlib.contextmanager
def vision_capture(model: Any, site: VisionSite, layout: VisionLayout, stop: bool) -> Iterator[dict[str, Any]]:
    """Hook the encoder's blocks for one forward pass; always removed.

    Args:
        model: The transformers model.
        site: Its :class:`VisionSite`.
        layout: The batch's :class:`VisionLayout`.
        stop: Raise :class:`~lmms_probe_tasks.extract.capture.StopForward` right after the
            last block (nothing after the encoder runs; the caller catches it).

    Yields:
        A dict that holds ``"vision"``: ``[n_rows, n_blocks + 1, d]`` float32, once the last
        block has run (also when the caller catches the stop outside the ``with``).
    """
    import torch

    blocks = vision_blocks(model, site)
    rows: dict[int, Any] = {}
    captured: dict[str, Any] = {}

    def store(index: int, hidden: Any) -> None:
        if index in rows:
            raise ValueError(
                f"vision block {index} ran twice in one forward (a second encoder call, e.g. videos); "
                "sites=vision captures one image pass per forward"
            )
        rows[index] = pool_vision(hidden, layout)
        if index == len(blocks):
            # Blocks may sit on several devices (device_map=auto): gather on the first row's.
            device = rows[0].device
            captured["vision"] = torch.stack([rows[i].to(device) for i in range(len(blocks) + 1)], dim=1)
            if stop:
                raise StopForward

    def first_input(module: Any, args: tuple, kwargs: dict) -> None:
        store(0, kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])

    def output_hook(index: int) -> Any:
        return lambda module, args, output: store(index, output)

    handles = [blocks[0].register_forward_pre_hook(first_input, with_kwargs=True)]
    handles += [block.register_forward_hook(output_hook(i + 1)) for i, block in enumerate(blocks)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


__all__ = [
    "LAYOUTS",
    "OTHER_SITES",
    "VISION",
    "VisionLayout",
    "VisionSite",
    "check_vision",
    "pool_vision",
    "vision_blocks",
    "vision_capture",
    "vision_depth",
    "vision_layout",
    "vision_prefix",
]


__all__ = ["LAYOUTS", "VISION", "VisionLayout", "VisionSite", "check_vision", "pool_vision", "vision_blocks",
           "vision_capture", "vision_depth", "vision_layout", "vision_prefix"]  # fmt: skip
