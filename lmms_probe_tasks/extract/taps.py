"""What one forward pass captures at each site: decoder layers, the projector, the vision encoder, named modules.

A run probes one or more *sites* (the ``sites=`` and ``modules=`` model args):

* ``language``: the decoder's layers (:mod:`lmms_probe_tasks.extract.capture`), rows ``lNN``;
* ``projector``: the image features exactly as the language model receives them, i.e.
  the decoder's input (layer 0) at the image-token positions, after the projector /
  connector / merger and any family-specific placement (LLaVA-NeXT's unpadding), mean
  over those positions; one row, ``proj``;
* ``vision``: every hidden state of the vision encoder (:mod:`lmms_probe_tasks.extract.vision`),
  mean over all positions of all tiles of the document's images; rows ``vNN``;
* ``modules``: the output (first element of a tuple) of each module a glob names
  (:mod:`lmms_probe_tasks.extract.module_glob`), pooled like the stream it sits on:
  the ``pooling`` arg on the decoder's stream, as ``vision`` on the encoder's; rows
  ``mNN`` in ``named_modules()`` order.

All sites come from the same forward pass, which stops at the earliest point that
yields everything asked for: after the deepest decoder layer needed, at the decoder's
input when only the projector (or vision-encoder modules) is needed, and right after
the vision encoder's last block for ``sites=vision`` alone (the decoder never runs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from lmms_probe_tasks.extract.capture import pool

#: Sites in pipeline order (the order of rows, files and figure stacks).
SITES: tuple[str, ...] = ("vision", "projector", "language", "modules")
#: Sites whose features see the image only: not applicable to a target that depends on the text.
IMAGE_ONLY_SITES: tuple[str, ...] = ("vision", "projector")
#: Row-name prefix of each site (``acc_l07``, ``acc_v03``, ``acc_proj``, ``acc_m02``).
ROW_PREFIX: dict[str, str] = {"language": "l", "vision": "v", "projector": "proj", "modules": "m"}


def parse_sites(value: Any, modules_given: bool) -> tuple[str, ...]:
    """Validate a ``sites=`` value: one site or a bracketed list, returned in :data:`SITES` order.

    Args:
        value: ``"language"``, ``"[vision,projector,language]"`` (how lmms-eval hands a list
            over), or a list/tuple of names.
        modules_given: Whether ``modules=`` was given (it adds the ``modules`` site).

    Returns:
        The sites, de-duplicated, in pipeline order.

    Raises:
        ValueError: An unknown or missing site, or ``modules`` without ``modules=``.
    """
    if isinstance(value, (list, tuple)):
        names = [str(v).strip() for v in value]
    else:
        names = [part.strip().strip("'\"") for part in str(value).strip().strip("[]").split(",")]
    names = [name for name in names if name]
    unknown = [name for name in names if name not in SITES]
    if unknown or not names:
        raise ValueError(
            f"sites={value!r}: {'unknown ' + ', '.join(map(repr, unknown)) if unknown else 'no site given'}; "
            f"valid: {', '.join(SITES)}, or a list such as 'sites=[vision,projector,language]' (quote the whole "
            "--model_args in the shell)"
        )
    if "modules" in names and not modules_given:
        raise ValueError("sites includes 'modules' but no modules= glob was given; add e.g. modules=model.**.mlp")
    if modules_given and "modules" not in names:
        names.append("modules")
    return tuple(site for site in SITES if site in names)


def row_name(site: str, index: int, width: int) -> str:
    """The row suffix of one site row (``l07``, ``v03``, ``proj``, ``m02``).

    Args:
        site: One of :data:`SITES`.
        index: The row's index within its site.
        width: Digits (at least 2).
    """
    if site == "projector":
        return ROW_PREFIX[site]
    return f"{ROW_PREFIX[site]}{index:0{max(2, width)}d}"


@dataclass(frozen=True)
class ModuleTap:
    """One module a ``modules=`` glob matched.

    Attributes:
        name: Its ``named_modules()`` name.
        stream: ``"text"`` (on the decoder: pooled with the ``pooling`` arg) or ``"vision"``
            (in the vision encoder: pooled as the ``vision`` site).
        needs: The decoder index (:mod:`~lmms_probe_tasks.extract.layers` numbering) the
            pass must reach for this module to have run (text stream); -1 on the vision stream.
    """

    name: str
    stream: str
    needs: int


@dataclass(frozen=True)
class Taps:
    """Everything one forward pass captures.

    Attributes:
        layers: Decoder rows requested (``language`` site; empty when not probed).
        n_decoder: The decoder's depth ``L``.
        projector: Whether the ``projector`` site is probed.
        vision: The family's :class:`~lmms_probe_tasks.extract.vision.VisionSite` when the
            ``vision`` site is probed or a module sits in the vision encoder, else None.
        vision_rows: Whether the ``vision`` site itself is probed.
        modules: The ``modules=`` matches, in ``named_modules()`` order.
    """

    layers: tuple[int, ...]
    n_decoder: int
    projector: bool = False
    vision: Any | None = None
    vision_rows: bool = False
    modules: tuple[ModuleTap, ...] = ()

    @property
    def text_modules(self) -> tuple[int, ...]:
        """Indices (into :attr:`modules`) of the modules on the decoder's stream."""
        return tuple(j for j, tap in enumerate(self.modules) if tap.stream == "text")

    @property
    def vision_modules(self) -> tuple[int, ...]:
        """Indices (into :attr:`modules`) of the modules in the vision encoder."""
        return tuple(j for j, tap in enumerate(self.modules) if tap.stream == "vision")

    @property
    def suffix_needed(self) -> bool:
        """Whether anything is read from text positions after the image (decoder rows, decoder modules)."""
        return bool(self.layers) or bool(self.text_modules)

    @property
    def stop_at(self) -> int | None:
        """The deepest decoder index the pass must reach; None when the decoder is not needed at all."""
        needs = [*self.layers, *(self.modules[j].needs for j in self.text_modules)]
        if self.projector or self.vision_modules:
            needs.append(0)  # the decoder's input: projector output in place, vision encoder done
        return max(needs) if needs else None

    @property
    def suffix_stop(self) -> int | None:
        """The deepest decoder index a suffix pass must reach (decoder rows and decoder modules only)."""
        needs = [*self.layers, *(self.modules[j].needs for j in self.text_modules)]
        return max(needs) if needs else None

    @property
    def language_only(self) -> bool:
        """Today's default: decoder rows and nothing else."""
        return not (self.projector or self.vision_rows or self.modules)


def module_taps(
    model: Any, names: Sequence[str], decoder: Any, layers: Sequence[Any], vision_root: str | None
) -> tuple[ModuleTap, ...]:
    """Place each matched module on its stream and find how deep the pass must go for it.

    Args:
        model: The loaded model.
        names: Matched ``named_modules()`` names, in that order.
        decoder: The module the decoder's stream runs through (``families.suffix_decoder``).
        layers: The decoder's layer list.
        vision_root: The vision encoder's ``named_modules()`` name, or None when the family's
            vision rows are not supported.

    Returns:
        One :class:`ModuleTap` per name.

    Raises:
        ValueError: A module sits on neither stream (names the module and what to use instead).
    """
    named = dict(model.named_modules())
    decoder_name = next((name for name, module in named.items() if module is decoder), None)
    layer_index = {id(layer): k for k, layer in enumerate(layers)}
    out = []
    for name in names:
        ancestors = [".".join(name.split(".")[:i]) for i in range(len(name.split(".")), 0, -1)]
        if vision_root is not None and vision_root in ancestors:
            out.append(ModuleTap(name, "vision", -1))
            continue
        if decoder_name is None or decoder_name not in ancestors:
            where = f"the language decoder ({decoder_name!r})" + (
                f" and the vision encoder ({vision_root!r})" if vision_root else ""
            )
            raise ValueError(
                f"modules=: {name!r} sits on neither stream this tool can pool: modules= covers {where}. "
                "For the projector's output use sites=projector; narrow the glob to modules inside those."
            )
        inside = [layer_index[id(named[a])] for a in ancestors if id(named[a]) in layer_index]
        # Inside decoder layer k: done when row k + 1 is produced; elsewhere on the decoder (norm, ...): all of it.
        out.append(ModuleTap(name, "text", inside[0] + 1 if inside else len(layers)))
    return tuple(out)


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
    from lmms_probe_tasks.extract.vision import pool_vision

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
    image_weights = pooling_weights(inputs["attention_mask"], "image", image_mask) if taps.projector else None
    layout = None
    if taps.vision is not None:
        from lmms_probe_tasks.extract.vision import vision_layout

        layout = vision_layout(inputs, taps.vision, images_per_row, model.config)
    kwargs = families.forward_kwargs(model, family, inputs)
    captured = run_sites(
        lambda: model(**kwargs, use_cache=False, return_dict=True), model, parts, taps, weights,
        stop_at=taps.stop_at, image_weights=image_weights, layout=layout, owner=type(model).__name__,
    )  # fmt: skip
    return to_arrays(captured, taps)
