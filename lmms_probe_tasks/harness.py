"""lmms-eval glue: the probe task class, its doc functions, and per-layer aggregation.

Every probe task is a :class:`ProbeTask` (declared with ``class:`` in the shared
YAML template). Compared with a plain YAML task it

* builds its documents itself (``download``) from a builder named in ``dataset_kwargs``,
  as one shuffled union of probe-train and probe-test docs, because lmms-eval only
  runs the model on one split;
* turns each document's ``[n_layers + 1, hidden]`` features into metric payloads: one
  *carrier* payload holds the features, every other row's payload only the doc id; the
  carrier row is aggregated first and fits **all layers in one vectorised pass**
  (:func:`lmms_probe_tasks.protocol.run_protocol`: dev-selected L2, seeds, bootstrap CIs,
  controls, MDL); every ``<metric>_lNN`` row and the summary rows read that result, so
  each layer's probe is trained once per run, not once per table row;
* declares its metric names at run time (the number of layers depends on the model);
* fails at once, with the fix, where the harness would otherwise retry five times.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from loguru import logger

from lmms_probe_tasks import transport
from lmms_probe_tasks.numerics import flush_denormals
from lmms_probe_tasks.probe import TARGET_KINDS, multi_hot
from lmms_probe_tasks.report import ProbeReport, write_report

try:  # lmms-eval is a hard dependency, but keep the pure helpers importable without it
    from lmms_eval.api.task import ConfigurableTask
except ImportError:  # pragma: no cover
    ConfigurableTask = object  # type: ignore[misc,assignment]

#: Keys of the ``probe:`` block of a task's ``metadata``.
PROBE_KEYS = (
    "metric", "kind", "label_field", "n_classes", "label_names", "preset", "probe", "protocol",
    "group_field", "type_field", "semantics",
)  # fmt: skip
METRICS = ("acc", "map")
SEMANTICS = ("global", "local")
#: ``--gen_kwargs`` keys that override a probe task's protocol from the command line.
CLI_OVERRIDES = {
    "probe_preset": "preset",
    "probe_model": "probe",
    "probe_seeds": "n_seeds",
    "probe_bootstrap": "n_bootstrap",
}


def load_builder(dotted: str) -> Callable[..., Any]:
    """Import ``package.module.function`` (or ``package.module:function``).

    Raises:
        ValueError: The path does not name an importable callable.
    """
    module_name, _, attr = dotted.replace(":", ".").rpartition(".")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(
            f"dataset_kwargs.builder {dotted!r} is not an importable function ({exc}); "
            "give a dotted path such as lmms_probe_tasks.data.shapes.entailment_docs"
        ) from exc
    if not callable(fn):
        raise ValueError(f"dataset_kwargs.builder {dotted!r} is not callable")
    return fn


# ---------------------------------------------------------------- doc functions
def to_rgb(image: Any) -> Any:
    """Normalise any PIL image to what every processor expects: upright 8-bit RGB.

    - EXIF orientation is applied (a phone photo is shown upright, as a viewer shows it);
    - 16-bit greyscale (``I;16``, ``I``) is scaled to 8 bits (``convert`` would clip it);
    - transparency (RGBA, LA, palette with alpha) is composited on white, not dropped to black;
    - CMYK, greyscale, palette and the rest go through PIL's own conversion.
    """
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(wide / 257.0, 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def doc_to_visual(doc: dict) -> list:
    """Return the document's image as a one-element list of upright 8-bit RGB PIL images."""
    return [to_rgb(doc["image"])]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """Fill the task's prompt template (``lmms_eval_specific_kwargs.prompt``) with the doc's ``text``."""
    template = (lmms_eval_specific_kwargs or {}).get("prompt", "{text}")
    return template.format(text=doc.get("text", ""))


def doc_to_target(doc: dict) -> str:
    """Return the gold label as text (only for ``--log_samples``)."""
    return str(doc.get("label", doc.get("labels", "")))


# ------------------------------------------------------------------- the task
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
        protocol: Further :class:`~lmms_probe_tasks.protocol.ProtocolConfig` overrides.
        group_field: Column whose value groups docs for the dev split and bootstrap (the
            image); default: ``image_id``, else ``scene_id``, else each doc alone.
        type_field: Column whose value is a *type* of the control task (Hewitt & Liang);
            default: the group field.
        semantics: ``global`` or ``local`` (pairs tasks in the paper figure).
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

    @classmethod
    def from_metadata(cls, task: str, metadata: Any) -> ProbeSpec:
        """Read and validate the ``probe`` block of a task's ``metadata``."""
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
        )
        spec.protocol_config()  # fail at task load, not after hours of extraction
        return spec

    def protocol_config(self, cli: dict | None = None) -> Any:
        """Build the protocol settings: YAML preset and overrides, then ``--gen_kwargs probe_*`` ones.

        Args:
            cli: The task's ``generation_kwargs`` (holding any ``--gen_kwargs`` from the CLI).
        """
        from lmms_probe_tasks.protocol import ProtocolConfig

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
        """Fill class names and count from the dataset's features when the YAML gives none."""
        if self.label_names or not names:
            return self
        return dataclasses.replace(self, label_names=names, n_classes=self.n_classes or len(names))


def _class_names(feature: Any) -> tuple[str, ...]:
    """Names of a ``ClassLabel`` (or a list of ``ClassLabel``) dataset feature, else ()."""
    import datasets

    inner = getattr(feature, "feature", None) if not isinstance(feature, datasets.ClassLabel) else feature
    if isinstance(feature, list) and feature:
        inner = feature[0]
    return tuple(inner.names) if isinstance(inner, datasets.ClassLabel) else ()


def _layer_key(metric: str, layer: int, n_layers: int) -> str:
    """Zero-padded row name (``acc_l07``) so lmms-eval's alphabetical table sorts by layer."""
    return f"{metric}_l{layer:0{max(2, len(str(n_layers)))}d}"


class _Aggregations(Mapping):
    """Aggregation functions for run-time metric names (``acc_l00`` … plus the summary)."""

    def __init__(self, task: ProbeTask) -> None:
        self._task = task
        metric = task.spec.metric
        self._layer_re = re.compile(rf"^{metric}_l(\d+)$")
        self._summary = {f"{metric}_best": "best", f"{metric}_last": "last", "best_layer": "best_layer"}

    def __getitem__(self, key: str) -> Callable[..., float]:
        match = self._layer_re.match(key)
        if match:
            return functools.partial(self._task.aggregate_row, which=int(match.group(1)))
        if key in self._summary:
            return functools.partial(self._task.aggregate_row, which=self._summary[key])
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._task.metric_names)

    def __len__(self) -> int:
        return len(self._task.metric_names)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (bool(self._layer_re.match(key)) or key in self._summary)


class ProbeTask(ConfigurableTask):  # type: ignore[misc,valid-type]
    """An lmms-eval task whose score is a probe per layer of the model's hidden states."""

    def __init__(self, config: dict | None = None, **kwargs: Any) -> None:
        config = {k: v for k, v in (config or {}).items() if k != "class"}
        self.spec = ProbeSpec.from_metadata(config.get("task", "?"), config.get("metadata"))
        self.metric_names: list[str] = []
        self._report: ProbeReport | None = None
        super().__init__(config=config, **kwargs)

    # -- data -------------------------------------------------------------
    def download(self, dataset_kwargs: dict | None = None) -> None:
        """Build the evaluated split (probe-train ∪ probe-test) with the configured builder."""
        import datasets

        kwargs = dict(dataset_kwargs or {})
        if "builder" not in kwargs:
            raise ValueError(
                f"task {self.config.task}: dataset_kwargs.builder is missing; "
                "name a function returning a datasets.Dataset, e.g. lmms_probe_tasks.data.shapes.entailment_docs"
            )
        built = load_builder(kwargs.pop("builder"))(**kwargs)
        # A builder returns the docs, or (docs, report) where the report counts what
        # it skipped and why; the report goes into every artifact.
        docs, self.data_report = built if isinstance(built, tuple) else (built, {})
        self.spec = self.spec.with_label_names(_class_names(docs.features.get(self.spec.label_field)))
        check_docs(self.config.task, docs, self.spec.label_field)
        split = self.config.test_split
        if self.config.process_docs is not None:
            docs = self.config.process_docs(docs)
        self.dataset = datasets.DatasetDict({split: docs})
        media = [name for name, feat in docs.features.items() if isinstance(feat, datasets.Image)]
        self.dataset_no_image = datasets.DatasetDict({split: docs.remove_columns(media)})

    def _prepare_model_specific_config(self) -> None:
        """Pick the prompt for the model in use: by checkpoint id, else model type, else ``default``.

        Keys of ``lmms_eval_specific_kwargs`` tried in order: the checkpoint id (``pretrained``),
        the model type (e.g. ``llava``, ``qwen2_vl``), then ``default``. lmms-eval keys these by
        its model name, which is always ``hidden_states`` here (and is not even passed to
        class-based tasks); the model type is the useful key.
        """
        super()._prepare_model_specific_config()
        table = self.config.lmms_eval_specific_kwargs or {}
        for key in (transport.ACTIVE_MODEL.get("model"), transport.ACTIVE_MODEL.get("model_type")):
            if key and isinstance(table.get(key), dict):
                self.lmms_eval_specific_kwargs = {**table.get("default", {}), **table[key]}
                break

    def _prepare_metric_and_aggregation(self) -> None:
        # Metric names depend on the model's depth: see aggregation().
        self._metric_fn_list, self._metric_fn_kwargs = {}, {}
        self._aggregation_list, self._higher_is_better = {}, {}

    def build_all_requests(self, *args: Any, **kwargs: Any) -> None:
        """Forget the previous run's results, then build requests as usual."""
        self.metric_names = []
        self._report = None
        super().build_all_requests(*args, **kwargs)

    # -- per document (runs in lmms-eval's worker threads; no retries here) -
    def _field(self, doc: dict, name: str | None, fallbacks: tuple[str, ...]) -> str:
        for key in (name,) if name else fallbacks:
            if key in doc and doc[key] is not None:
                return str(doc[key])
        if name:
            raise KeyError(f"task {self.config.task}: metadata.probe names field {name!r}, which docs lack")
        return str(doc.get("uid"))

    def process_results(self, doc: dict, results: list, full_docs: Any = None) -> dict:
        """Emit the carrier payload (features) first, then one small payload per other row."""
        response = results[0] if results else None
        features = transport.STORE.take(response) if isinstance(response, str) else None
        if features is None:
            raise RuntimeError(
                f"task {self.config.task}, doc {doc.get('uid')!r}: the model returned {str(response)[:80]!r}, "
                "not a feature key. Probe tasks need --model hidden_states (lmms_probe_tasks) run in this process; "
                "responses replayed from a cache or made by another model carry no features."
            )
        # Row r of the array is layer meta["layers"][r] (all layers unless the user picked some).
        layer_ids = features.meta["layers"]
        n_layers = features.meta.get("n_layers", layer_ids[-1])
        group = self._field(doc, self.spec.group_field, ("image_id", "scene_id"))
        base = {"uid": doc.get("uid"), "train": doc["probe_split"] == "train", "y": doc[self.spec.label_field]}
        carrier = {
            **base,
            # The cache file's path when there is one (rank 0 reads it from disk), else the array.
            **({"x_path": features.path} if features.path else {"x": features.layers}),
            "layers": list(layer_ids),
            "n_layers": n_layers,
            "meta": features.meta,
            "group": group,
            "type": self._field(doc, self.spec.type_field, ()) if self.spec.type_field else group,
            "text": doc.get("text") or "",
        }
        m = self.spec.metric
        # Insertion order is aggregation order (lmms-eval keeps rank 0's key order):
        # the carrier row comes first and fits every layer; the others read its result.
        payload = {f"{m}_best": carrier}
        payload.update({_layer_key(m, layer, n_layers): base for layer in layer_ids})
        payload.update({f"{m}_last": base, "best_layer": base})
        if not self.metric_names:
            self.metric_names = list(payload)
        return payload

    # -- aggregation (rank 0) ---------------------------------------------
    def aggregation(self) -> Mapping:
        """Aggregations for the run-time metric names."""
        return _Aggregations(self)

    def higher_is_better(self) -> dict:
        """Direction of every metric seen in this run (``best_layer`` has none)."""
        return {name: (None if name == "best_layer" else True) for name in self.metric_names}

    def aggregate_row(self, items: list[dict], which: int | str, args: Any = None) -> float:
        """Return one row: a layer's score, ``best``, ``last`` or ``best_layer``.

        The first call (the carrier row, whose items hold the features) runs the protocol
        over all layers and writes the artifacts; every other call reads that result.
        """
        if self._report is None:
            if not items or not ("x" in items[0] or "x_path" in items[0]):
                raise RuntimeError(
                    f"task {self.config.task}: a row was aggregated before the feature-carrying row; "
                    "lmms-eval changed its aggregation order (please report this)"
                )
            self._report = self._finish(items, getattr(args, "output_path", None))
        if isinstance(which, int):
            return self._report.scores.get(which, math.nan)
        return self._report.summary[which]

    def _targets(self, items: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        is_train = np.array([item["train"] for item in items], dtype=bool)
        labels = [item["y"] for item in items]
        if self.spec.kind == "multilabel":
            return multi_hot(labels, self.spec.n_classes), is_train
        return np.asarray(labels, dtype=np.int64), is_train

    def _finish(self, items: list[dict], output_path: str | None) -> ProbeReport:
        """Fit every layer, assemble the report, write the artifacts."""
        from lmms_probe_tasks.protocol import run_protocol

        items = _canonical(items)
        y, is_train = self._targets(items)
        first = items[0]
        config = self.spec.protocol_config(self.config.generation_kwargs)
        x = layer_major(items)
        with flush_denormals():
            result = run_protocol(
                x,
                y,
                is_train,
                kind=self.spec.kind,
                config=config,
                groups=np.array([item["group"] for item in items]),
                types=np.array([item["type"] for item in items]),
                layer_ids=first["layers"],
            )
        if result.reason:
            logger.warning(
                f"task {self.config.task}: layer scores are NaN: {result.reason} "
                f"(probe-train {result.n_train}, probe-test {result.n_test} docs). Raise --limit or the data sizes."
            )
        rows = result.to_rows()
        metric = self.spec.metric
        for i, row in enumerate(rows):
            score = row.pop("score")
            row.pop("metric", None)  # "accuracy"/"mAP": the column name says it
            depth = row["layer"] / first["n_layers"] if first["n_layers"] else 0.0
            row.pop("relative_depth", None)  # recomputed on the model's depth, not the deepest probed layer
            rows[i] = {"layer": row.pop("layer"), "relative_depth": depth, metric: score, **row}
        scores = {row["layer"]: row[metric] for row in rows}
        best = result.best_layer
        summary = {
            "best_layer": float(best) if best is not None else math.nan,
            "best": scores[best] if best is not None else math.nan,
            "last": scores[max(scores)] if scores else math.nan,
            "best_layer_distribution": {str(k): v for k, v in result.best_layer_prob.items()},
            "majority_baseline": result.majority_baseline,
            "text_only_score": text_only_score([item["text"] for item in items], y, is_train, self.spec.kind),
            "notes": list(result.notes),
            "nan_reason": result.reason,
        }
        report_config = {
            "protocol": config.to_dict(),
            "semantics": self.spec.semantics,
            "extraction": first["meta"],
            "data": {
                "n_train": int(is_train.sum()),
                "n_test": int((~is_train).sum()),
                "label_field": self.spec.label_field,
                "label_names": list(self.spec.label_names),
                "group_field": self.spec.group_field or "auto (image_id, scene_id or uid)",
                "type_field": self.spec.type_field or "the group field",
                "builder": dict(self.config.dataset_kwargs or {}),
                "report": getattr(self, "data_report", {}),
            },
            "prompt_template": (self.lmms_eval_specific_kwargs or {}).get("prompt"),
            "versions": versions(),
        }
        report = ProbeReport(self.config.task, metric, rows, summary, report_config)
        if output_path:
            paths = write_report(report, f"{output_path}/probes")
            logger.info(f"task {self.config.task}: per-layer results written to {paths['json'].parent}")
        return report


def layer_major(items: list[dict], memmap_bytes: int | None = None) -> np.ndarray:
    """Stack the documents' ``[n_layers, hidden]`` float16 features into ``[n_layers, n_docs, hidden]``.

    Each item carries its array (``x``) or the path of its feature-cache file (``x_path``).
    The result stays float16 and is filled in place, one document at a time; above
    ``memmap_bytes`` (default ``$LMMS_PROBE_MEMMAP_BYTES`` or 2 GiB) it is a ``numpy.memmap``
    in a temporary file, so 50k docs x 33 layers x 4096 dims (13.5 GB) never sit in RAM.

    Raises:
        FileNotFoundError: A cache file another node wrote is not visible here.
    """
    from lmms_probe_tasks.feature_cache import read_verified

    def features(item: dict) -> np.ndarray:
        if "x" in item:
            return item["x"]
        try:
            return read_verified(item["x_path"])
        except FileNotFoundError:
            raise FileNotFoundError(
                f"feature cache file {item['x_path']} is not visible on this node: a multi-node run needs "
                "feature_cache=<folder on a shared filesystem>, or feature_cache=none"
            ) from None

    first = features(items[0])
    shape = (first.shape[0], len(items), first.shape[1])
    limit = memmap_bytes if memmap_bytes is not None else int(os.environ.get("LMMS_PROBE_MEMMAP_BYTES", 2 << 30))
    if np.prod(shape) * 2 > limit:
        import tempfile

        handle = tempfile.NamedTemporaryFile(prefix="lmms_probe_layers_", suffix=".f16", delete=False)
        out: np.ndarray = np.memmap(handle.name, dtype=np.float16, mode="w+", shape=shape)
        os.unlink(handle.name)  # the mapping keeps the data; the name goes now, the space when unmapped
    else:
        out = np.empty(shape, dtype=np.float16)
    out[:, 0, :] = first
    for i, item in enumerate(items[1:], start=1):
        out[:, i, :] = features(item)
    return out


def text_only_score(texts: list[str], y: np.ndarray, is_train: np.ndarray, kind: str) -> float:
    """Score of a bag-of-words probe on the document text alone (no model, no image).

    The hypothesis-only baseline of the entailment literature (Gururangan et al. 2018): how
    much of a task the text gives away. NaN when the texts are empty or constant.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score

    from lmms_probe_tasks.probe import unusable_reason

    texts = [t or "" for t in texts]
    if len(set(texts)) < 2 or unusable_reason(y, is_train, kind) or kind == "multilabel":
        return math.nan
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=1)
    train_x = vectorizer.fit_transform([t for t, keep in zip(texts, is_train) if keep])
    test_x = vectorizer.transform([t for t, keep in zip(texts, is_train) if not keep])
    model = LogisticRegression(max_iter=2000).fit(train_x, y[is_train])
    return float(accuracy_score(y[~is_train], model.predict(test_x)))


def check_docs(task: str, docs: Any, label_field: str) -> None:
    """Refuse, at task load, documents the probe cannot use as given.

    Raises:
        ValueError: A missing column, or duplicate ``uid`` values (naming a few) — a duplicate
            would silently weigh one document twice, or put it on both sides.
    """
    missing = [c for c in ("uid", "probe_split", "image", label_field) if c not in docs.column_names]
    if missing:
        raise ValueError(f"task {task}: its builder's documents lack column(s) {missing}; see README 'Adding a task'")
    uids = docs["uid"]
    if len(set(uids)) != len(uids):
        seen: set = set()
        dupes = sorted({u for u in uids if u in seen or seen.add(u)})
        raise ValueError(
            f"task {task}: {len(uids) - len(set(uids))} duplicate doc uid(s), e.g. {dupes[:5]}; "
            "every document needs a unique uid (fix the task's builder)"
        )
    splits = set(docs["probe_split"])
    if not splits <= {"train", "test"}:
        raise ValueError(f"task {task}: probe_split values {sorted(splits - {'train', 'test'})}; valid: train, test")


def _canonical(items: list[dict]) -> list[dict]:
    """Order payloads by doc uid, one per doc, so the fit is the same whatever the rank layout.

    lmms-eval concatenates ranks' payloads in rank order; sorting makes 1-process and
    N-process runs train on identical matrices.
    """
    unique = {item["uid"]: item for item in items}
    if len(unique) != len(items):
        raise ValueError(
            f"{len(items) - len(unique)} duplicate doc uid(s) among {len(items)} probe docs; "
            "every doc of a probe task needs a unique 'uid' (fix the task's builder)"
        )
    return [unique[uid] for uid in sorted(unique)]


def versions() -> dict[str, str]:
    """Versions of the libraries that shape the numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for dist in ("lmms-probe-tasks", "lmms-eval", "transformers", "torch", "scikit-learn", "datasets"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out
