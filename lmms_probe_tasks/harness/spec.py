"""Reads and validates what a probe task predicts and how it is scored (the ``metadata.probe`` block)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from lmms_probe_tasks.probe import TARGET_KINDS, ProtocolConfig

#: Keys of the ``probe:`` block of a task's ``metadata``.
PROBE_KEYS = (
    "metric", "kind", "label_field", "n_classes", "label_names", "preset", "probe", "protocol",
    "group_field", "type_field", "semantics", "image_only",
)  # fmt: skip
METRICS = ("acc", "map")
#: The row that puts chance next to the layer rows: the majority-class (or constant-score) baseline.
CHANCE_ROW = {"acc": "acc_majority", "map": "map_chance"}
SEMANTICS = ("global", "local")
#: ``--gen_kwargs`` keys that override a probe task's protocol from the command line.
CLI_OVERRIDES = {
    "probe_preset": "preset",
    "probe_model": "probe",
    "probe_seeds": "n_seeds",
    "probe_bootstrap": "n_bootstrap",
}


@dataclass(frozen=True)
class ProbeSpec:
    """What a task's probe predicts and how it is scored (from ``metadata.probe``).

    Attributes:
        metric: Row prefix: ``acc`` (accuracy) or ``map`` (mean average precision).
        kind: ``multiclass`` or ``multilabel``.
        label_field: Document column holding the target.
        n_classes: Number of classes (needed for multi-label indicators).
        label_names: Class names, for the artifacts.
        preset: Protocol preset, ``fast`` or ``paper``.
        probe: ``linear`` or ``mlp``.
        protocol: Further :class:`~lmms_probe_tasks.probe.ProtocolConfig` overrides.
        group_field: Column whose value groups docs for the dev split and bootstrap (the
            image); default: ``image_id``, else ``scene_id``, else each doc alone.
        type_field: Column whose value is a *type* of the control task (Hewitt & Liang);
            default: the group field.
        semantics: ``global`` or ``local`` (pairs tasks in the paper figure).
        image_only: The target is a function of the image alone (which objects it shows), so
            image-only sites (``vision``, ``projector``, vision-encoder modules) can be probed
            for it; False (default) when it depends on the text too (a statement, a category
            asked about): those rows are NaN with a reason, never a number.
    """

    metric: str
    kind: str
    label_field: str
    n_classes: int
    label_names: tuple[str, ...]
    preset: str = "paper"
    probe: str = "linear"
    protocol: tuple[tuple[str, Any], ...] = ()
    group_field: str | None = None
    type_field: str | None = None
    semantics: str | None = None
    image_only: bool = False

    @classmethod
    def from_metadata(cls, task: str, metadata: Any) -> ProbeSpec:
        """Read and validate the ``probe`` block of a task's ``metadata``.

        Args:
            task: The task's name (for the errors).
            metadata: The task YAML's ``metadata`` mapping.

        Returns:
            The spec; its protocol settings have been built once, so a bad one fails at task load.

        Raises:
            ValueError: A missing block, an unknown key or a value outside its valid set, naming both.
        """
        block = metadata.get("probe") if isinstance(metadata, dict) else None
        if not isinstance(block, dict):
            raise ValueError(
                f"task {task}: metadata.probe is missing; add e.g. probe: {{metric: acc, kind: multiclass}}"
            )
        unknown = sorted(set(block) - set(PROBE_KEYS))
        if unknown:
            raise ValueError(f"task {task}: unknown metadata.probe keys {unknown}; valid: {', '.join(PROBE_KEYS)}")
        metric = block.get("metric", "acc")
        if metric not in METRICS:
            raise ValueError(f"task {task}: metadata.probe.metric {metric!r} is not one of {', '.join(METRICS)}")
        kind = block.get("kind", "multiclass")
        if kind not in TARGET_KINDS:
            raise ValueError(f"task {task}: metadata.probe.kind {kind!r} is not one of {', '.join(TARGET_KINDS)}")
        semantics = block.get("semantics")
        if semantics not in (None, *SEMANTICS):
            raise ValueError(
                f"task {task}: metadata.probe.semantics {semantics!r} is not one of {', '.join(SEMANTICS)}"
            )
        names = tuple(block.get("label_names", ()))
        spec = cls(
            metric=metric,
            kind=kind,
            label_field=block.get("label_field", "label"),
            n_classes=int(block.get("n_classes", len(names))),
            label_names=names,
            preset=block.get("preset", "paper"),
            probe=block.get("probe", "linear"),
            protocol=tuple(sorted(dict(block.get("protocol") or {}).items())),
            group_field=block.get("group_field"),
            type_field=block.get("type_field"),
            semantics=semantics,
            image_only=_flag(task, "image_only", block.get("image_only", False)),
        )
        spec.protocol_config()  # fail at task load, not after hours of extraction
        return spec

    def protocol_config(self, cli: dict | None = None) -> ProtocolConfig:
        """Build the protocol settings: YAML preset and overrides, then ``--gen_kwargs probe_*`` ones.

        Args:
            cli: The task's ``generation_kwargs`` (holding any ``--gen_kwargs`` from the CLI).

        Returns:
            The :class:`~lmms_probe_tasks.probe.ProtocolConfig` to fit with.
        """
        fields = {"probe": self.probe, **dict(self.protocol)}
        if "device" not in fields:
            import torch

            # The batched fit is matrix work: on a GPU when there is one (set protocol.device to pin it).
            fields["device"] = "cuda" if torch.cuda.is_available() else "cpu"
        preset = self.preset
        for key, field_name in CLI_OVERRIDES.items():
            if cli and key in cli:
                if field_name == "preset":
                    preset = cli[key]
                else:
                    fields[field_name] = int(cli[key]) if field_name.startswith("n_") else cli[key]
        return ProtocolConfig.from_preset(preset, **fields)

    def with_label_names(self, names: tuple[str, ...]) -> ProbeSpec:
        """Fill class names and count from the dataset's features when the YAML gives none.

        Args:
            names: The dataset's class names (see :func:`class_names`).

        Returns:
            This spec, or a copy with the names filled in.
        """
        if self.label_names or not names:
            return self
        return dataclasses.replace(self, label_names=names, n_classes=self.n_classes or len(names))


def class_names(feature: Any) -> tuple[str, ...]:
    """Return the names of a ``ClassLabel`` (or a list of ``ClassLabel``) dataset feature, else ().

    Args:
        feature: One entry of ``datasets.Dataset.features`` (or None).
    """
    import datasets

    inner = getattr(feature, "feature", None) if not isinstance(feature, datasets.ClassLabel) else feature
    if isinstance(feature, list) and feature:
        inner = feature[0]
    return tuple(inner.names) if isinstance(inner, datasets.ClassLabel) else ()


def _flag(task: str, key: str, value: Any) -> bool:
    """A YAML boolean of ``metadata.probe``, or fail naming it."""
    if not isinstance(value, bool):
        raise ValueError(f"task {task}: metadata.probe.{key} must be true or false, got {value!r}")
    return value
