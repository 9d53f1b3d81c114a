"""One forward pass that captures every site a :class:`~lmms_probe_tasks.extract.taps.Taps` asks for.

Hooks, installed in an order that matters (modules first: on a module that also ends the
pass, the final norm, they must fire before the stop), pool each site the moment it is
produced: decoder layers and the projector (:func:`~lmms_probe_tasks.extract.capture.layer_capture`),
the vision encoder's blocks (:func:`~lmms_probe_tasks.extract.vision.vision_capture`, laid
out by :mod:`~lmms_probe_tasks.extract.vision_layout`) and
named modules (:func:`module_capture`). :func:`extract_sites` runs whole documents;
:mod:`lmms_probe_tasks.extract.shared_prefix` runs prefixes and suffixes with
:func:`run_sites` too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from lmms_probe_tasks.extract.capture import pool
from lmms_probe_tasks.extract.taps import ModuleTap, Taps


def _first(output: Any) -> Any:
    """A module's main output: the first element of a tuple or a ModelOutput."""
    if hasattr(output, "to_tuple"):
        return output.to_tuple()[0]
    if isinstance(output, (tuple, list)):
        return output[0]
    return output


@contextlib.contextmanager
def module_capture(model: Any, taps: Taps, weights: Any, layout: Any | None) -> Iterator[dict[int, Any]]:
    """Hook every matched module; always removed. Install before the decoder's stop hooks (they fire in order).

    Args:
        model: The loaded model.
        taps: What to capture (its :attr:`Taps.modules`).
        weights: ``[batch, seq]`` pooling weights of the decoder's stream (sums or means).
        layout: The batch's :class:`~lmms_probe_tasks.extract.vision.VisionLayout` (vision-stream
            modules), or None when this pass does not run the vision encoder.

    Yields:
        Module index -> ``[batch, hidden]`` float32, filled during the pass.
    """
    from lmms_probe_tasks.extract.vision_layout import pool_vision

    captured: dict[int, Any] = {}

    def hook(j: int, tap: ModuleTap) -> Any:
        def store(module: Any, args: tuple, output: Any) -> None:
            hidden = _first(output)
            if tap.stream == "vision":
                captured[j] = pool_vision(hidden, layout)
                return
            if getattr(hidden, "ndim", 0) != 3 or tuple(hidden.shape[:2]) != tuple(weights.shape):
                raise ValueError(
                    f"modules=: {tap.name!r} outputs shape {tuple(getattr(hidden, 'shape', ()))}, not "
                    f"[batch, seq, hidden] = [{weights.shape[0]}, {weights.shape[1]}, ...] of the text stream; "
                    "it cannot be pooled per position: narrow the glob to modules that output hidden states"
                )
            captured[j] = pool(hidden, weights)

        return store

    wanted = [j for j in range(len(taps.modules)) if layout is not None or taps.modules[j].stream == "text"]
    handles = [
        model.get_submodule(taps.modules[j].name).register_forward_hook(hook(j, taps.modules[j])) for j in wanted
    ]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def stack_modules(captured: dict[int, Any], names: Sequence[str]) -> Any:
    """Stack the modules' pooled vectors into ``[batch, n_modules, hidden]``, or fail naming the widths.

    Args:
        captured: Module index -> ``[batch, hidden]`` (every index present).
        names: The modules' names, by index.

    Returns:
        The stacked float32 tensor.

    Raises:
        ValueError: The modules do not share one output width (one feature array per site).
    """
    import torch

    widths = {names[j]: int(captured[j].shape[-1]) for j in sorted(captured)}
    if len(set(widths.values())) > 1:
        raise ValueError(
            f"modules=: the matched modules output different widths {widths}; one run probes modules of one width "
            "(one feature array per site): narrow the glob, e.g. to '...layers.*.mlp' rather than '...layers.*.mlp.*'"
        )
    return torch.stack([captured[j] for j in range(len(names))], dim=1)


def run_sites(
    forward: Any,
    model: Any,
    parts: Any,
    taps: Taps,
    weights: Any,
    *,
    stop_at: int | None,
    image_weights: Any | None = None,
    layout: Any | None = None,
    owner: str = "model",
) -> dict[str, Any]:
    """Call ``forward()`` with every site's hooks installed and return what they captured.

    Args:
        forward: Runs one forward pass (its output is discarded; the pass is stopped early).
        model: The loaded model (modules are found on it by name).
        parts: The decoder's layers and final norm.
        taps: What to capture.
        weights: ``[batch, seq]`` pooling weights of the text stream (means, or masks for sums).
        stop_at: The decoder index after which the pass stops; None: the decoder is not needed
            (then the vision encoder's capture stops the pass after its last block).
        image_weights: Weights over the image positions (the ``projector`` site), or None.
        layout: The batch's :class:`~lmms_probe_tasks.extract.vision.VisionLayout` when this pass
            runs the vision encoder and something on it is captured, else None.
        owner: What runs the pass (named in errors).

    Returns:
        ``"language"``: ``[batch, len(taps.layers), hidden]`` (when layers were asked for);
        ``"projector"``: ``[batch, 1, hidden]``; ``"vision"``: ``[batch, n_vision_rows, d]``;
        ``"modules"``: module index -> ``[batch, d]`` (those this pass ran): float32 tensors.

    Raises:
        RuntimeError: The pass never reached something requested.
    """
    import torch

    from lmms_probe_tasks.extract.capture import StopForward, layer_capture
    from lmms_probe_tasks.numerics import flush_denormals

    with torch.inference_mode(), flush_denormals(), contextlib.ExitStack() as stack:
        # Module hooks first: on a module that also ends the pass (the final norm) they must fire before the stop.
        modules = stack.enter_context(module_capture(model, taps, weights, layout))
        vision: dict[str, Any] = {}
        if taps.vision_rows and layout is not None:
            from lmms_probe_tasks.extract.vision import vision_capture

            vision = stack.enter_context(vision_capture(model, taps.vision, layout, stop=stop_at is None))
        decoder: dict[Any, Any] = {}
        if stop_at is not None:
            decoder = stack.enter_context(
                layer_capture(parts, taps.layers, weights, stop_at=stop_at, image_weights=image_weights)
            )
        try:
            forward()
        except StopForward:
            pass
    out: dict[str, Any] = {"modules": dict(modules)}
    missing = [layer for layer in taps.layers if layer not in decoder] if stop_at is not None else []
    if missing:
        raise RuntimeError(f"{owner}: the forward pass never produced layers {missing}")
    if taps.layers and stop_at is not None:
        out["language"] = torch.stack([decoder[layer] for layer in taps.layers], dim=1)
    if image_weights is not None:
        if "projector" not in decoder:
            raise RuntimeError(f"{owner}: the forward pass never reached the decoder's input (projector site)")
        out["projector"] = decoder["projector"][:, None, :]
    if taps.vision_rows and layout is not None:
        if "vision" not in vision:
            raise RuntimeError(f"{owner}: the forward pass never ran the vision encoder (vision site)")
        out["vision"] = vision["vision"]
    expected = [j for j in range(len(taps.modules)) if layout is not None or taps.modules[j].stream == "text"]
    expected = [j for j in expected if taps.modules[j].stream == "vision" or stop_at is not None]
    never = [taps.modules[j].name for j in expected if j not in modules]
    if never:
        raise RuntimeError(f"{owner}: modules {never} never ran in the forward pass; drop them from modules=")
    return out


def to_arrays(captured: dict[str, Any], taps: Taps) -> dict[str, Any]:
    """Turn :func:`run_sites`' tensors (means) into each site's ``[batch, rows, d]`` float32 numpy array.

    Args:
        captured: Site -> tensor (``"modules"``: module index -> ``[batch, d]``, all present).
        taps: What was captured.

    Returns:
        Site -> array, for the sites :attr:`Taps` asks for.
    """
    import numpy as np

    out = {}
    for site in ("vision", "projector", "language"):
        if site in captured and (site != "vision" or taps.vision_rows):
            out[site] = captured[site].cpu().numpy().astype(np.float32)
    if taps.modules:
        names = [tap.name for tap in taps.modules]
        out["modules"] = stack_modules(captured["modules"], names).cpu().numpy().astype(np.float32)
    return out


def image_inputs(
    model: Any, inputs: Any, taps: Taps, image_mask: Any | None, images_per_row: Sequence[int]
) -> tuple[Any | None, Any | None]:
    """What the image-only sites need from a pass that runs the images: projector weights, the vision layout.

    Args:
        model: The transformers model.
        inputs: The processor output of the pass (whole documents or prefixes).
        taps: What to capture.
        image_mask: ``[batch, seq]`` bool, True at image positions (needed for the projector).
        images_per_row: Images of each batch row.

    Returns:
        ``(image_weights, layout)``: ``[batch, seq]`` weights over the image positions (None
        without the projector) and the :class:`~lmms_probe_tasks.extract.vision.VisionLayout`
        (None when nothing on the vision encoder is captured).
    """
    from lmms_probe_tasks.extract.capture import pooling_weights

    image_weights = pooling_weights(inputs["attention_mask"], "image", image_mask) if taps.projector else None
    layout = None
    if taps.vision is not None:
        from lmms_probe_tasks.extract.vision_layout import vision_layout

        layout = vision_layout(inputs, taps.vision, images_per_row, model.config)
    return image_weights, layout


def extract_sites(
    model: Any,
    family: Any,
    parts: Any,
    inputs: Any,
    pooling: str,
    taps: Taps,
    images_per_row: Sequence[int],
) -> dict[str, Any]:
    """Run one (truncated) forward pass over a batch of whole documents and return every site's features.

    Args:
        model: The transformers model.
        family: Its :class:`~lmms_probe_tasks.extract.families.Family`.
        parts: The decoder's layers and final norm.
        inputs: The processor output of the batch, on the model's device.
        pooling: One of :data:`~lmms_probe_tasks.extract.capture.POOLINGS` (the text stream's pooling).
        taps: What to capture.
        images_per_row: Images of each document.

    Returns:
        Site -> ``[batch, rows, d]`` float32 array (see :func:`to_arrays`).
    """
    from lmms_probe_tasks.extract import families
    from lmms_probe_tasks.extract.capture import pooling_weights

    image_mask = None
    if pooling in ("image", "text") or taps.projector:
        image_mask = families.image_positions(model.config, family, inputs)
    weights = pooling_weights(inputs["attention_mask"], pooling, image_mask)
    image_weights, layout = image_inputs(model, inputs, taps, image_mask, images_per_row)
    kwargs = families.forward_kwargs(model, family, inputs)
    captured = run_sites(
        lambda: model(**kwargs, use_cache=False, return_dict=True), model, parts, taps, weights,
        stop_at=taps.stop_at, image_weights=image_weights, layout=layout, owner=type(model).__name__,
    )  # fmt: skip
    return to_arrays(captured, taps)


def extract_batch(
    model: Any,
    inputs: Any,
    pooling: str,
    layers: Sequence[int],
    image_mask: Any | None = None,
    parts: Any | None = None,
) -> Any:
    """Run one (truncated) forward pass and return the requested decoder layers' pooled states.

    The decoder-only case of :func:`extract_sites`, for callers holding forward arguments.

    Args:
        model: A transformers image-text model.
        inputs: Forward arguments for the batch (``input_ids``, ``attention_mask``,
            ``pixel_values``, ...), already on the model's device.
        pooling: One of :data:`~lmms_probe_tasks.extract.capture.POOLINGS`.
        layers: Requested indices in ``0..L``, sorted.
        image_mask: ``[batch, seq]`` bool, True at image positions (``image``/``text`` pooling).
        parts: The probed stack's modules (found with ``find_decoder`` when omitted).

    Returns:
        ``[batch, len(layers), hidden]`` float32 array, rows in the order of ``layers`` (the
        feature cache stores it as scaled float16, see
        :func:`~lmms_probe_tasks.transport.feature_cache.encode`).
    """
    import numpy as np

    from lmms_probe_tasks.extract.capture import pooling_weights
    from lmms_probe_tasks.extract.layers import find_decoder

    parts = parts or find_decoder(model)
    if pooling in ("image", "text") and image_mask is None:
        raise ValueError(f"pooling={pooling!r} needs the image positions of the batch")
    weights = pooling_weights(inputs["attention_mask"], pooling, image_mask)
    taps = Taps(tuple(layers), len(parts.layers))
    captured = run_sites(
        lambda: model(**inputs, use_cache=False, return_dict=True), model, parts, taps, weights,
        stop_at=taps.stop_at, owner=type(model).__name__,
    )  # fmt: skip
    return captured["language"].cpu().numpy().astype(np.float32)
