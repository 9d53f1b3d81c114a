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

All sites come from the same forward pass (:mod:`lmms_probe_tasks.extract.site_pass`),
which stops at the earliest point that yields everything asked for: after the deepest
decoder layer needed, at the decoder's input when only the projector (or vision-encoder
modules) is needed, and right after the vision encoder's last block for ``sites=vision``
alone (the decoder never runs). This module says *what* a pass captures (:class:`Taps`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
