"""Maps a batch's vision-encoder outputs to its documents and pools them: the ``vision`` site's layouts.

An encoder's block outputs are ``[tiles, seq, d]`` or packed ``[patches, d]``; which
rows belong to which document depends on the family's image processing (one row per
image, anyres tiles from ``image_sizes``, padded tiles dropped as the model drops them,
``t*h*w`` patches per image, media x tiles). :func:`vision_layout` reads that mapping
from a batch's processor output once (a :class:`VisionLayout`); :func:`pool_vision`
averages any vision-stream module's output per document with it, padding left out so a
document's rows do not depend on its batch. Which layout a family has is
:data:`lmms_probe_tasks.extract.vision.VISION`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the table's entry type; vision.py imports this module
    from lmms_probe_tasks.extract.vision import VisionSite

#: Layout kinds: how the encoder's block outputs line up with a batch's images.
LAYOUTS: dict[str, str] = {
    "images": "pixel_values [n_images, C, H, W]: one encoder row per image, in document order",
    "anyres": "pixel_values [n_images, max_tiles, C, H, W]: tiles per image from image_sizes (anyres grid)",
    "tiles": "pixel_values [rows, max_tiles, C, H, W]: all-zero tiles dropped, padded patches masked",
    "packed": "pixel_values [total_patches, ...]: t*h*w patches per image from image_grid_thw",
    "media_tiles": "pixel_values [rows, media, tiles, C, H, W]: real tiles from aspect_ratio_mask/ids",
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

