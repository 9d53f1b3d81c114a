"""Checks the ``sites=`` / ``modules=`` model args at start and plans what each forward pass captures.

Everything here runs before any weight is loaded, on the config and a weightless copy
of the architecture (``meta`` device): a site the family does not have, a glob that
matches nothing or a module on neither stream fails at once, naming the family, the
sites it has, or the closest module names. The plan (:class:`SitePlan`) is the
:class:`~lmms_probe_tasks.extract.taps.Taps` of every pass plus what the results record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmms_probe_tasks.extract import families
from lmms_probe_tasks.extract.families import Family
from lmms_probe_tasks.extract.taps import IMAGE_ONLY_SITES, ModuleTap, Taps, module_taps, parse_sites


@dataclass(frozen=True)
class SitePlan:
    """The sites of a run and how to capture them.

    Attributes:
        sites: The probed sites, in pipeline order (:data:`~lmms_probe_tasks.extract.taps.SITES`).
        taps: What every forward pass captures.
        rows: Site -> its row indices (``language``: the ``layers`` arg; ``vision``:
            ``0..V``; ``projector``: ``[0]``; ``modules``: ``0..M-1``).
        meta: What the results record about the sites (``config.extraction``).
    """

    sites: tuple[str, ...]
    taps: Taps
    rows: dict[str, list[int]]
    meta: dict[str, Any]


def available_sites(config: Any, family: Family) -> tuple[str, ...]:
    """The sites a family has (``language`` always; ``projector`` where image features sit in the sequence).

    Args:
        config: The checkpoint's config.
        family: Its :class:`~lmms_probe_tasks.extract.families.Family`.
    """
    from lmms_probe_tasks.extract.vision import VISION, VisionSite

    out = ["language"]
    in_sequence = family.image_positions != "cross_attention" and (
        family.image_positions != "image_token_id" or getattr(config, "image_token_id", None) is not None
    )
    if in_sequence:
        out.append("projector")
    if isinstance(VISION.get(families.family_key(config)), VisionSite):
        out.append("vision")
    return tuple(out)


def _check_available(sites: tuple[str, ...], config: Any, family: Family, blind: str) -> None:
    """Refuse a site the family lacks, or image-only sites without an image (one line, with the fix)."""
    from lmms_probe_tasks.extract.vision import VISION

    key = families.family_key(config)
    have = available_sites(config, family)
    for site in sites:
        if site in ("language", "modules") or site in have:
            continue
        if site == "vision":
            reason = VISION.get(key) if isinstance(VISION.get(key), str) else "not in the vision table"
        else:
            reason = "image features reach the text only through cross-attention; no sequence position holds them"
        raise ValueError(f"sites={site} is not available for {key!r} ({reason}); this family has sites: "
                         f"{', '.join(have)}")  # fmt: skip
    image_only = [site for site in sites if site in IMAGE_ONLY_SITES]
    if image_only and blind == "noimage":
        raise ValueError(f"sites {image_only} read the image, but blind=noimage drops it; use blind=blank or none")


def _modules(globs: tuple[str, ...], skeleton: Any, family: Family, vision_site: Any) -> tuple[ModuleTap, ...]:
    """Match the globs on the weightless model and place each module on its stream."""
    from lmms_probe_tasks.extract.module_glob import match_modules
    from lmms_probe_tasks.extract.vision import vision_prefix

    names = match_modules([name for name, _ in skeleton.named_modules()], globs)
    root = vision_prefix(skeleton, vision_site) if vision_site is not None else None
    decoder = families.suffix_decoder(skeleton, family)
    return module_taps(skeleton, names, decoder, families.decoder_layers(skeleton, family), root)


def plan_sites(
    sites_arg: Any,
    modules_arg: Any,
    *,
    config: Any,
    family: Family,
    layers: tuple[int, ...],
    blind: str,
    trust_remote_code: bool = False,
    skeleton: Any | None = None,
) -> SitePlan:
    """Validate ``sites=`` and ``modules=`` and plan the capture (no weights loaded).

    Args:
        sites_arg: The raw ``sites=`` value (default ``language``).
        modules_arg: The raw ``modules=`` value, or None.
        config: The checkpoint's config.
        family: Its family entry.
        layers: The decoder rows of the ``layers=`` arg.
        blind: The validated ``blind=`` value.
        trust_remote_code: Whether checkpoint code may run (building the weightless copy).
        skeleton: The weightless copy already built at start
            (:func:`~lmms_probe_tasks.extract.loading.check_decoder`); built here when needed and None.

    Returns:
        The :class:`SitePlan`.

    Raises:
        ValueError: An unknown or unavailable site, a glob matching nothing, a module on
            neither stream (each in one message with the fix).
    """
    from lmms_probe_tasks.extract.module_glob import parse_modules_arg
    from lmms_probe_tasks.extract.vision import VISION, VisionSite, vision_depth

    globs = parse_modules_arg(modules_arg) if modules_arg not in (None, "", "none") else ()
    sites = parse_sites(sites_arg, bool(globs))
    _check_available(sites, config, family, blind)
    n_decoder = int(config.get_text_config().num_hidden_layers)
    key = families.family_key(config)
    vision_site = VISION.get(key) if isinstance(VISION.get(key), VisionSite) else None
    taps_modules: tuple[ModuleTap, ...] = ()
    if globs:
        from lmms_probe_tasks.extract.loading import build_skeleton

        skeleton = skeleton if skeleton is not None else build_skeleton(config, trust_remote_code)
        taps_modules = _modules(globs, skeleton, family, vision_site)
        if any(tap.stream == "vision" for tap in taps_modules) and blind == "noimage":
            raise ValueError("modules= names vision-encoder modules, but blind=noimage drops the image")
    needs_vision = "vision" in sites or any(tap.stream == "vision" for tap in taps_modules)
    taps = Taps(
        layers=tuple(layers) if "language" in sites else (),
        n_decoder=n_decoder,
        projector="projector" in sites,
        vision=vision_site if needs_vision else None,
        vision_rows="vision" in sites,
        modules=taps_modules,
    )
    rows: dict[str, list[int]] = {}
    meta: dict[str, Any] = {"sites": list(sites)}
    if "vision" in sites:
        rows["vision"] = list(range(vision_depth(config, key)))
        meta["vision"] = {
            "rows": len(rows["vision"]),
            "row_0": "input of the vision encoder's first block (its output_hidden_states[0])",
            "pooling": "mean over all positions of all tiles of the document's images",
            "notes": vision_site.notes,
        }
    if "projector" in sites:
        rows["projector"] = [0]
        meta["projector"] = "the decoder's input at the image-token positions (projector output in place), mean"
    if "language" in sites:
        rows["language"] = list(layers)
    if taps_modules:
        rows["modules"] = list(range(len(taps_modules)))
        meta["module_names"] = [tap.name for tap in taps_modules]
        meta["module_streams"] = [tap.stream for tap in taps_modules]
    return SitePlan(sites, taps, rows, meta)


def site_fingerprints(fingerprint: dict[str, Any], plan: SitePlan) -> dict[str, dict[str, Any]]:
    """The feature-cache fingerprint of each site: the run's, plus what makes that site's features differ.

    ``language`` keeps the run's fingerprint unchanged, so decoder features cached by a
    ``sites=language`` run serve a ``sites=[vision,language]`` run and back.

    Args:
        fingerprint: :func:`~lmms_probe_tasks.extract.settings.cache_fingerprint` of the run.
        plan: The run's :class:`SitePlan`.

    Returns:
        Site -> fingerprint for :func:`~lmms_probe_tasks.transport.doc_key`.
    """
    out = {}
    for site in plan.sites:
        if site == "language":
            out[site] = fingerprint
        elif site == "modules":
            out[site] = {**fingerprint, "site": site, "modules": [tap.name for tap in plan.taps.modules]}
        else:
            out[site] = {**fingerprint, "site": site}
    return out
