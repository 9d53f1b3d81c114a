"""Image handling shared by every data source: check that images decode, cache hub bytes as files, normalise to RGB."""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

#: An image value as ``datasets.Image`` stores it: a file path or encoded bytes.
ImageValue = dict[str, Any]
#: What fetching one image gives: its value, or the skip reason.
Fetched = ImageValue | str

MISSING_IMAGE = "missing_image"
CORRUPT_IMAGE = "corrupt_image"
#: Skip reason of images past PIL's decompression-bomb limit (raise PIL.Image.MAX_IMAGE_PIXELS to admit them).
IMAGE_TOO_LARGE = "image_too_large"


def decode_problem(data: bytes | Path) -> str | None:
    """Return None if the image fully decodes, else the skip reason.

    A full ``load()`` (not ``verify()``) so truncated files are caught here, not when
    the model first touches the image.

    Args:
        data: Encoded image bytes, or the path of an image file.

    Returns:
        None, or one of ``MISSING_IMAGE``, ``CORRUPT_IMAGE``, ``IMAGE_TOO_LARGE``.
    """
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            image.load()
    except FileNotFoundError:
        return MISSING_IMAGE
    except Image.DecompressionBombError:
        # Over twice PIL's MAX_IMAGE_PIXELS (~179 Mpx): decoding could exhaust memory.
        return IMAGE_TOO_LARGE
    except (OSError, SyntaxError, ValueError):
        return CORRUPT_IMAGE
    return None


def check_image_files(paths: Mapping[str, Path], workers: int = 8) -> dict[str, Fetched]:
    """Decode each file once (threads: PIL releases the GIL).

    Args:
        paths: Image id -> file path.
        workers: Decoding threads.

    Returns:
        Image id -> ``{"path": ..., "bytes": None}``, or the skip reason.
    """

    def one(item: tuple[str, Path]) -> tuple[str, Fetched]:
        key, path = item
        problem = decode_problem(path)
        return key, problem if problem else {"path": str(path), "bytes": None}

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return dict(pool.map(one, paths.items()))


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def image_cache_dir(source: str, split: str) -> Path:
    """Return the folder where images streamed from a hub copy are written once, so docs hold paths, not bytes.

    Args:
        source: Hub id or local folder of the copy.
        split: Name of the split's subfolder.
    """
    import datasets

    safe = _safe_name(source.strip("/"))[-80:]
    digest = hashlib.sha1(source.encode()).hexdigest()[:8]  # keeps two local folders with one name apart
    return Path(datasets.config.HF_DATASETS_CACHE) / "lmms_probe_tasks" / "images" / f"{safe}-{digest}" / split


def store_image_bytes(data: bytes, folder: Path, key: str) -> Fetched:
    """Check that ``data`` decodes and write it to ``folder/<key>`` once.

    Args:
        data: Encoded image bytes.
        folder: Cache folder (from :func:`image_cache_dir`).
        key: File name; characters outside ``[A-Za-z0-9_.-]`` become ``_``.

    Returns:
        ``{"path": ..., "bytes": None}``, or the skip reason.
    """
    problem = decode_problem(data)
    if problem:
        return problem
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / _safe_name(key)
    if not (path.is_file() and path.stat().st_size == len(data)):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # atomic: a concurrent rank never reads a half-written file
    return {"path": str(path), "bytes": None}


def store_streamed_images(
    rows: Iterable[Mapping[str, Any]],
    id_of: Callable[[Mapping[str, Any]], str],
    wanted: set[str],
    folder: Path,
    suffix: str,
) -> dict[str, Fetched]:
    """Store the wanted images of a streamed hub split, each once, stopping as soon as all are in hand.

    Args:
        rows: Streamed rows with an undecoded ``image`` column (``{"bytes", "path"}``).
        id_of: The image id of a row.
        wanted: Ids to store; other rows are passed over.
        folder: Cache folder (from :func:`image_cache_dir`).
        suffix: File name suffix after the id, e.g. ``.jpg``.

    Returns:
        Image id -> ``{"path": ..., "bytes": None}`` or the skip reason (``corrupt_image``
        for a row without bytes); ids never met are absent.
    """
    out: dict[str, Fetched] = {}
    for row in rows:
        key = id_of(row)
        if key not in wanted or key in out:
            continue
        data = (row["image"] or {}).get("bytes")
        out[key] = store_image_bytes(data, folder, f"{key}{suffix}") if data else CORRUPT_IMAGE
        if len(out) == len(wanted):
            break  # stop streaming as soon as every selected image is in hand
    return out


def to_rgb(image: Any) -> Any:
    """Normalise any PIL image to what every processor expects: upright 8-bit RGB.

    - EXIF orientation is applied (a phone photo is shown upright, as a viewer shows it);
    - 16-bit greyscale (``I;16``, ``I``) is scaled to 8 bits (``convert`` would clip it);
    - transparency (RGBA, LA, palette with alpha) is composited on white, not dropped to black;
    - CMYK, greyscale, palette and the rest go through PIL's own conversion.

    Args:
        image: A ``PIL.Image.Image`` of any mode.

    Returns:
        An RGB ``PIL.Image.Image`` of the same (upright) size.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(wide / 257.0, 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")
