"""lmms-eval glue: the probe task class, its doc functions, and per-layer aggregation.

Every probe task is a :class:`ProbeTask` (declared with ``class:`` in the shared
YAML template). Compared with a plain YAML task it

* builds its documents itself (``download``) from a builder named in ``dataset_kwargs``,
  as one shuffled union of probe-train and probe-test docs, because lmms-eval only
  runs the model on one split;
* turns each document's ``[n_layers + 1, hidden]`` features into one metric payload
  per layer, so lmms-eval gathers every layer across ranks and calls one aggregation
  per layer: the probe of layer ``l`` is trained exactly once, by the ``<metric>_lNN``
  row's aggregation, and the summary rows read those results;
* declares its metric names at run time (the number of layers depends on the model);
* fails at once, with the fix, where the harness would otherwise retry five times.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from loguru import logger

from lmms_probe_tasks import transport
from lmms_probe_tasks.probe import LayerScore, ProbeConfig, multi_hot, score_layer, summarize
from lmms_probe_tasks.report import ProbeReport, sanitize, write_report

try:  # lmms-eval is a hard dependency, but keep the pure helpers importable without it
    from lmms_eval.api.task import ConfigurableTask
except ImportError:  # pragma: no cover
    ConfigurableTask = object  # type: ignore[misc,assignment]

#: Keys of the ``probe:`` block of a task's ``metadata``.
PROBE_KEYS = ("metric", "kind", "label_field", "n_classes", "label_names", "C", "max_iter", "seed")
METRICS = ("acc", "map")


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
def doc_to_visual(doc: dict) -> list:
    """Return the document's image as a one-element list of RGB PIL images."""
    return [doc["image"].convert("RGB")]


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
        label_field: Document column holding the target.
        n_classes: Number of classes (needed for multi-label indicators).
        label_names: Class names, for the artifacts.
        probe: Probe settings.
    """

    metric: str
    label_field: str
    n_classes: int
    label_names: tuple[str, ...]
    probe: ProbeConfig

    @classmethod
    def from_metadata(cls, task: str, metadata: Any) -> ProbeSpec:
        """Read and validate the ``probe`` block of a task's ``metadata``."""
        block = metadata.get("probe") if isinstance(metadata, dict) else None
        if not isinstance(block, dict):
            raise ValueError(f"task {task}: metadata.probe is missing; add e.g. probe: {{metric: acc, kind: multiclass}}")
        unknown = sorted(set(block) - set(PROBE_KEYS))
        if unknown:
            raise ValueError(f"task {task}: unknown metadata.probe keys {unknown}; valid: {', '.join(PROBE_KEYS)}")
        metric = block.get("metric", "acc")
        if metric not in METRICS:
            raise ValueError(f"task {task}: metadata.probe.metric {metric!r} is not one of {', '.join(METRICS)}")
        names = tuple(block.get("label_names", ()))
        probe = ProbeConfig(
            kind=block.get("kind", "multiclass"),
            C=float(block.get("C", 1.0)),
            max_iter=int(block.get("max_iter", 2000)),
            seed=int(block.get("seed", 0)),
        )
        return cls(metric, block.get("label_field", "label"), int(block.get("n_classes", len(names))), names, probe)

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
            return functools.partial(self._task.aggregate_layer, layer=int(match.group(1)))
        if key in self._summary:
            return functools.partial(self._task.aggregate_summary, which=self._summary[key])
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._task.metric_names)

    def __len__(self) -> int:
        return len(self._task.metric_names)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (bool(self._layer_re.match(key)) or key in self._summary)


class ProbeTask(ConfigurableTask):  # type: ignore[misc,valid-type]
    """An lmms-eval task whose score is a linear probe per layer of the model's hidden states."""

    def __init__(self, config: dict | None = None, **kwargs: Any) -> None:
        config = {k: v for k, v in (config or {}).items() if k != "class"}
        self.spec = ProbeSpec.from_metadata(config.get("task", "?"), config.get("metadata"))
        self.metric_names: list[str] = []
        self._scores: dict[int, LayerScore] = {}
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
        split = self.config.test_split
        if self.config.process_docs is not None:
            docs = self.config.process_docs(docs)
        self.dataset = datasets.DatasetDict({split: docs})
        media = [name for name, feat in docs.features.items() if isinstance(feat, datasets.Image)]
        self.dataset_no_image = datasets.DatasetDict({split: docs.remove_columns(media)})

    def _prepare_metric_and_aggregation(self) -> None:
        # Metric names depend on the model's depth: see aggregation().
        self._metric_fn_list, self._metric_fn_kwargs = {}, {}
        self._aggregation_list, self._higher_is_better = {}, {}

    def build_all_requests(self, *args: Any, **kwargs: Any) -> None:
        """Forget the previous run's layer scores, then build requests as usual."""
        self.metric_names = []
        self._scores, self._report = {}, None
        super().build_all_requests(*args, **kwargs)

    # -- per document (runs in lmms-eval's worker threads; no retries here) -
    def process_results(self, doc: dict, results: list, full_docs: Any = None) -> dict:
        """Turn one document's features into one payload per layer plus the summary payloads."""
        response = results[0] if results else None
        features = transport.STORE.take(response) if isinstance(response, str) else None
        if features is None:
            raise RuntimeError(
                f"task {self.config.task}, doc {doc.get('uid')!r}: the model returned {str(response)[:80]!r}, "
                "not a feature key. Probe tasks need --model hidden_states (lmms_probe_tasks) run in this process; "
                "responses replayed from a cache or made by another model carry no features."
            )
        # Row r of the array is layer meta["layers"][r] (all layers unless the user picked some).
        layer_ids = features.meta.get("layers") or list(range(features.layers.shape[0]))
        n_layers = features.meta.get("n_layers", layer_ids[-1])
        label = doc[self.spec.label_field]
        base = {"uid": doc.get("uid"), "train": doc["probe_split"] == "train", "y": label}
        payload = {
            _layer_key(self.spec.metric, layer, n_layers): {**base, "x": features.layers[row]}
            for row, layer in enumerate(layer_ids)
        }
        summary = {**base, "layers": list(layer_ids), "meta": features.meta}
        m = self.spec.metric
        payload.update({f"{m}_best": summary, f"{m}_last": summary, "best_layer": summary})
        if not self.metric_names:
            self.metric_names = list(payload)
        return payload

    # -- aggregation (rank 0, once per row) ------------------------------
    def aggregation(self) -> Mapping:
        """Aggregations for the run-time metric names."""
        return _Aggregations(self)

    def higher_is_better(self) -> dict:
        """Direction of every metric seen in this run (``best_layer`` has none)."""
        return {name: (None if name == "best_layer" else True) for name in self.metric_names}

    def _targets(self, items: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        is_train = np.array([item["train"] for item in items], dtype=bool)
        labels = [item["y"] for item in items]
        if self.spec.probe.kind == "multilabel":
            return multi_hot(labels, self.spec.n_classes), is_train
        return np.asarray(labels, dtype=np.int64), is_train

    def aggregate_layer(self, items: list[dict], layer: int) -> float:
        """Train and score the probe of one layer (the ``<metric>_lNN`` row)."""
        items = _canonical(items)
        y, is_train = self._targets(items)
        x = np.stack([item["x"] for item in items])
        score = score_layer(x, y, is_train, self.spec.probe)
        if score.reason and not any(s.reason for s in self._scores.values()):
            logger.warning(f"task {self.config.task}: layer scores are NaN: {score.reason}. Raise --limit or the data sizes.")
        self._scores[layer] = score
        return score.score

    def aggregate_summary(self, items: list[dict], which: str, args: Any = None) -> float:
        """Return ``best_layer``, the best or the last layer's score; write the artifacts once."""
        if self._report is None:
            self._report = self._finish(items, getattr(args, "output_path", None))
        return self._report.summary[which]

    def _finish(self, items: list[dict], output_path: str | None) -> ProbeReport:
        items = _canonical(items)
        missing = [layer for layer in (items[0]["layers"] if items else []) if layer not in self._scores]
        if missing:
            # lmms-eval aggregates in the order process_results returned the keys (layers first).
            raise RuntimeError(f"task {self.config.task}: layers {missing} were not aggregated before the summary")
        _, is_train = self._targets(items)
        config = {
            "probe": self.spec.probe.to_dict(),
            "extraction": items[0]["meta"] if items else {},
            "data": {
                "n_train": int(is_train.sum()),
                "n_test": int((~is_train).sum()),
                "label_field": self.spec.label_field,
                "label_names": list(self.spec.label_names),
                "builder": dict(self.config.dataset_kwargs or {}),
                "report": getattr(self, "data_report", {}),
            },
            "prompt_template": (self.lmms_eval_specific_kwargs or {}).get("prompt"),
            "versions": versions(),
        }
        report = ProbeReport(self.config.task, self.spec.metric, dict(sorted(self._scores.items())), summarize(self._scores), config)
        if output_path:
            model = sanitize(str(config["extraction"].get("model", "model")))
            paths = write_report(report, f"{output_path}/probes/{model}")
            logger.info(f"task {self.config.task}: per-layer results written to {paths['json'].parent}")
        return report


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

