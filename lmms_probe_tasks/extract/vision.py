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
:class:`VisionLayout` of the batch from :func:`vision_layout`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

from lmms_probe_tasks.extract.capture import StopForward

#: Layout kinds: how the encoder's block outputs line up with a batch's images.
LAYOUTS: dict[str, str] = {
    "images": "pixel_values [n_images, C, H, W]: one encoder row per image, in document order",
    "anyres": "pixel_values [n_images, max_tiles, C, H, W]: tiles per image from image_sizes (anyres grid)",
    "tiles": "pixel_values [rows, max_tiles, C, H, W]: all-zero tiles dropped, padded patches masked",
    "packed": "pixel_values [total_patches, ...]: t*h*w patches per image from image_grid_thw",
    "media_tiles": "pixel_values [rows, media, tiles, C, H, W]: real tiles from aspect_ratio_mask/ids",
}
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


@dataclasses.dataclass(frozen=True)
class VisionLayout:
    """How one batch's encoder outputs map to its documents (batch rows).

    Attributes:
        units: ``[n_units]`` int64: the batch row of each leading-dim unit of a block
            output (a tile/image for ``[n_units, seq, d]``, a patch for packed ``[n_units, d]``).
        mask: ``[n_units, seq]`` float32, 1 at the positions averaged; None: all positions.
        n_rows: Batch rows (documents).
        packed: Block outputs are ``[n_units, d]`` (no sequence dim).
    """

    units: Any
    mask: Any | None
    n_rows: int
    packed: bool = False


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


def _doc_of_image(images_per_row: Sequence[int], n_images: int, what: str) -> Any:
    """``[n_images]`` int64 batch row of each image (images in document order)."""
    import torch

    counts = [int(n) for n in images_per_row]
    empty = [row for row, n in enumerate(counts) if n < 1]
    if empty:
        raise ValueError(
            f"sites=vision: batch rows {empty} have no image (images_per_row={counts}); every document needs at "
            "least one image (use another site for blind=noimage)"
        )
    if sum(counts) != n_images:
        raise ValueError(
            f"sites=vision: the batch has {n_images} {what} but images_per_row={counts} sums to {sum(counts)}; "
            "pass one count per document of the images given to the processor (pan-and-scan crops are not supported)"
        )
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))


def _anyres_tiles(inputs: Any, config: Any) -> list[int]:
    """Tiles the model keeps per image of an anyres batch, computed exactly as its ``get_image_features``."""
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    sizes = inputs["image_sizes"]
    tiles = [
        image_size_to_num_patches(size, config.image_grid_pinpoints, config.vision_config.image_size) for size in sizes
    ]
    if "batch_num_images" in inputs:
        # Only LLaVA-OneVision's processor emits it; its model gives a multi-image row's images one tile each.
        single = [int(n) == 1 for n in inputs["batch_num_images"] for _ in range(int(n))]
        tiles = [t if keep else 1 for t, keep in zip(tiles, single)]
    return tiles


def _tiles_layout(inputs: Any, config: Any, images_per_row: Sequence[int]) -> VisionLayout:
    """Idefics3/SmolVLM: per-row tiles, the all-zero padding tiles dropped exactly as the model drops them."""
    import torch

    pixels = inputs["pixel_values"]
    rows, tiles = pixels.shape[:2]
    flat = pixels.reshape(rows * tiles, *pixels.shape[2:])
    real = (flat == 0.0).sum(dim=(-1, -2, -3)) != flat.shape[1:].numel()
    per_row = real.view(rows, tiles).sum(dim=1).tolist()
    if rows != len(images_per_row) or any((n > 0) != (int(k) > 0) for n, k in zip(per_row, images_per_row)):
        raise ValueError(
            f"sites=vision: real tiles per batch row {per_row} do not match images_per_row={list(images_per_row)}; "
            "pass one count per document"
        )
    _doc_of_image(images_per_row, sum(int(k) for k in images_per_row), "images")  # no image-less row
    units = torch.arange(rows).repeat_interleave(tiles)[real.cpu()]
    mask = None
    if "pixel_attention_mask" in inputs:
        # A patch is real where it holds a real pixel, as in Idefics3's get_image_features.
        size = int(config.vision_config.patch_size)
        pixel_mask = inputs["pixel_attention_mask"].reshape(rows * tiles, *pixels.shape[-2:])[real]
        grid = pixel_mask.unfold(1, size, size).unfold(2, size, size)
        mask = (grid.sum(dim=(-1, -2)) > 0).flatten(1).float().cpu()
    return VisionLayout(units=units, mask=mask, n_rows=rows)


def _media_tiles_layout(inputs: Any, config: Any, images_per_row: Sequence[int]) -> VisionLayout:
    """Mllama: one encoder row per (document, media slot); real tiles' CLS + patches, padding left out."""
    import torch

    rows, media, tiles = inputs["pixel_values"].shape[:3]
    real_media = inputs["aspect_ratio_ids"].cpu() != 0  # id 0 = an empty media slot
    if real_media.sum(dim=1).tolist() != [int(k) for k in images_per_row]:
        raise ValueError(
            f"sites=vision: images per batch row {real_media.sum(dim=1).tolist()} (aspect_ratio_ids) do not match "
            f"images_per_row={list(images_per_row)}"
        )
    _doc_of_image(images_per_row, int(real_media.sum()), "images")
    vision_config = config.vision_config
    positions = (vision_config.image_size // vision_config.patch_size) ** 2 + 1  # CLS + patches
    padded = positions + (8 - positions % 8) % 8  # the model pads each tile to a multiple of 8
    tile_mask = inputs["aspect_ratio_mask"].cpu().float() * real_media.unsqueeze(-1)  # [rows, media, tiles]
    slot = torch.zeros(padded)
    slot[:positions] = 1.0
    mask = (tile_mask.unsqueeze(-1) * slot).reshape(rows * media, tiles * padded)
    return VisionLayout(units=torch.arange(rows).repeat_interleave(media), mask=mask, n_rows=rows)


def vision_layout(
    inputs: Any, site: VisionSite, images_per_row: Sequence[int], config: Any | None = None
) -> VisionLayout:
    """Map the encoder's rows/patches of one batch to its documents.

    Args:
        inputs: The processor output of the batch, as ``model(**inputs)`` gets it
            (``pixel_values`` and, by layout, ``image_sizes``, ``image_grid_thw``,
            ``pixel_attention_mask``, ``aspect_ratio_ids``/``aspect_ratio_mask``).
        site: The family's :class:`VisionSite`.
        images_per_row: Images of each batch row (document), in the order given to the processor.
        config: The model config; needed by the ``anyres``, ``tiles`` and ``media_tiles`` layouts
            (grid pinpoints, patch size).

    Returns:
        The :class:`VisionLayout` for :func:`pool_vision`.

    Raises:
        ValueError: Video inputs, a document without images, counts that do not match the
            inputs, or a missing ``config``.
    """
    import torch

    videos = [name for name in ("pixel_values_videos", "video_grid_thw") if name in inputs]
    if videos:
        raise ValueError(f"sites=vision: the batch has video inputs {videos}; only images are supported: drop them")
    if site.layout in ("anyres", "tiles", "media_tiles") and config is None:
        raise ValueError(f"vision_layout: layout {site.layout!r} needs the model config; pass config=model.config")
    if "pixel_values" not in inputs:
        raise ValueError("sites=vision: the batch has no pixel_values (no image); every document needs an image")
    pixels = inputs["pixel_values"]
    n_rows = len(images_per_row)
    if site.layout == "images":
        return VisionLayout(units=_doc_of_image(images_per_row, pixels.shape[0], "images"), mask=None, n_rows=n_rows)
    if site.layout == "anyres":
        # image_sizes, not pixel_values: the model also takes tiles already flattened to 4-D.
        docs = _doc_of_image(images_per_row, len(inputs["image_sizes"]), "images (image_sizes rows)")
        tiles = torch.tensor(_anyres_tiles(inputs, config))
        return VisionLayout(units=docs.repeat_interleave(tiles), mask=None, n_rows=n_rows)
    if site.layout == "packed":
        grid = inputs["image_grid_thw"].cpu()
        docs = _doc_of_image(images_per_row, grid.shape[0], "images (image_grid_thw rows)")
        units = docs.repeat_interleave(grid.prod(dim=1))
        if units.shape[0] != pixels.shape[0]:
            raise ValueError(
                f"sites=vision: image_grid_thw gives {units.shape[0]} patches, pixel_values has {pixels.shape[0]} rows"
            )
        return VisionLayout(units=units, mask=None, n_rows=n_rows, packed=True)
    if site.layout == "tiles":
        return _tiles_layout(inputs, config, images_per_row)
    if site.layout == "media_tiles":
        return _media_tiles_layout(inputs, config, images_per_row)
    raise ValueError(f"vision layout {site.layout!r} is not one of {', '.join(LAYOUTS)}; fix VISION")


def pool_vision(hidden: Any, layout: VisionLayout) -> Any:
    """Average a vision-stream module output per document.

    Args:
        hidden: ``[n_units, seq, d]`` (or packed ``[n_units, d]``) states of any module on the
            encoder's stream (a block, its mlp, ...); the first element if a tuple.
        layout: The batch's :class:`VisionLayout`.

    Returns:
        ``[n_rows, d]`` float32 on ``hidden``'s device: the mean over all averaged positions
        of each document's tiles.

    Raises:
        ValueError: The output's shape does not fit the layout (a module off the stream, or
            a second encoder call such as videos).
    """
    import torch

    if isinstance(hidden, (tuple, list)):
        hidden = hidden[0]
    want = "[n_units, d]" if layout.packed else "[n_units, seq, d]"
    units = layout.units.to(hidden.device)
    if hidden.dim() != (2 if layout.packed else 3) or hidden.shape[0] != units.shape[0]:
        raise ValueError(
            f"vision output of shape {tuple(hidden.shape)} does not fit the batch layout {want} with "
            f"n_units={units.shape[0]}; hook only modules whose output keeps the encoder's positions"
        )
    # Packed patches are tiles of one position; no mask: every position counts.
    states = hidden.float().unsqueeze(1) if layout.packed else hidden.float()
    mask = layout.mask if layout.mask is not None else torch.ones(states.shape[:2])
    mask = mask.to(hidden.device)
    if mask.shape[1] != states.shape[1]:
        raise ValueError(
            f"vision output has {states.shape[1]} positions per tile, the layout's mask {mask.shape[1]}; "
            "hook only modules whose output keeps the encoder's positions"
        )
    sums, counts = torch.einsum("us,usd->ud", mask, states), mask.sum(dim=1)
    total = torch.zeros(layout.n_rows, states.shape[-1], device=hidden.device).index_add_(0, units, sums)
    count = torch.zeros(layout.n_rows, device=hidden.device).index_add_(0, units, counts)
    return total / count.unsqueeze(-1)


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
