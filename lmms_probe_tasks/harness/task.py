"""The probe task class: lmms-eval glue from documents to per-layer rows (the probe core does the fitting).

Every probe task is a :class:`ProbeTask` (declared with ``class:`` in the shared
YAML template). Compared with a plain YAML task it

* builds its documents itself (``download``) from a builder named in ``dataset_kwargs``,
  as one shuffled union of probe-train and probe-test docs, because lmms-eval only
  runs the model on one split;
* turns each document's ``[n_layers + 1, hidden]`` features into metric payloads: one
  *carrier* payload holds the features, every other row's payload only the doc id; the
  carrier row is aggregated first and fits **all layers in one vectorised pass**
  (:func:`lmms_probe_tasks.probe.run_protocol`: dev-selected L2, seeds, bootstrap CIs,
  controls, MDL); every ``<metric>_lNN`` row and the summary rows read that result, so
  each layer's probe is trained once per run, not once per table row;
* declares its metric names at run time (the number of layers depends on the model);
* fails at once, with the fix, where the harness would otherwise retry five times.
"""

from __future__ import annotations

import functools
import importlib
import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
from lmms_eval.api.task import ConfigurableTask
from loguru import logger

from lmms_probe_tasks import transport
from lmms_probe_tasks.data.contract import BuiltDocs, check_docs
from lmms_probe_tasks.harness.results import canonical, layer_rows, summarize
from lmms_probe_tasks.harness.spec import CHANCE_ROW, ProbeSpec, class_names
from lmms_probe_tasks.numerics import flush_denormals
from lmms_probe_tasks.probe import ProtocolConfig, multi_hot, run_protocol, text_only_score
from lmms_probe_tasks.report import ProbeReport, versions, write_report
from lmms_probe_tasks.transport import export_features, layer_major

_BUILDER_EXAMPLE = "lmms_probe_tasks.data.shapes.entailment_docs"


def load_builder(dotted: str) -> Callable[..., Any]:
    """Import ``package.module.function`` (or ``package.module:function``).

    Args:
        dotted: The ``dataset_kwargs.builder`` path.

    Returns:
        The builder function.

    Raises:
        ValueError: The path does not name an importable callable.
    """
    module_name, _, attr = dotted.replace(":", ".").rpartition(".")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(
            f"dataset_kwargs.builder {dotted!r} is not an importable function ({exc}); "
            f"give a dotted path such as {_BUILDER_EXAMPLE}"
        ) from exc
    if not callable(fn):
        raise ValueError(f"dataset_kwargs.builder {dotted!r} is not callable")
    return fn


def layer_key(metric: str, layer: int, n_layers: int) -> str:
    """Return the zero-padded row name (``acc_l07``), so lmms-eval's alphabetical table sorts by layer.

    Args:
        metric: ``acc`` or ``map``.
        layer: The layer index.
        n_layers: The model's depth (wider padding for models over 99 layers).
    """
    return f"{metric}_l{layer:0{max(2, len(str(n_layers)))}d}"


class _Aggregations(Mapping):
    """Aggregation functions for run-time metric names (``acc_l00`` … plus the summary)."""

    def __init__(self, task: ProbeTask) -> None:
        self._task = task
        metric = task.spec.metric
        self._layer_re = re.compile(rf"^{metric}_l(\d+)$")
        self._summary = {
            f"{metric}_best": "best",
            f"{metric}_last": "last",
            CHANCE_ROW[metric]: "majority_baseline",
            "best_layer": "best_layer",
        }

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


class ProbeTask(ConfigurableTask):
    """An lmms-eval task whose score is a probe per layer of the model's hidden states."""

    def __init__(self, config: dict | None = None, **kwargs: Any) -> None:
        config = {k: v for k, v in (config or {}).items() if k != "class"}
        self.spec = ProbeSpec.from_metadata(config.get("task", "?"), config.get("metadata"))
        self.metric_names: list[str] = []
        self._report: ProbeReport | None = None
        self.data_report: dict[str, Any] = {}
        super().__init__(config=config, **kwargs)

    # -- data -------------------------------------------------------------
    def download(self, dataset_kwargs: dict | None = None) -> None:
        """Build the evaluated split (probe-train ∪ probe-test) with the configured builder.

        Args:
            dataset_kwargs: The YAML's ``dataset_kwargs``: ``builder`` (dotted path) and its arguments.

        Raises:
            ValueError: No builder, or documents the probe cannot use (see
                :func:`lmms_probe_tasks.data.contract.check_docs`).
            TypeError: The builder returned something other than a ``BuiltDocs``.
            DataUnavailableError: The builder's data cannot be read (checked first, cheaply:
                no hub retries).
        """
        import datasets

        self._require_data(dict(dataset_kwargs or {}))
        docs = self._build_docs(dict(dataset_kwargs or {}))
        self.spec = self.spec.with_label_names(class_names(docs.features.get(self.spec.label_field)))
        check_docs(self.config.task, docs, self.spec.label_field)
        split = self.config.test_split
        if self.config.process_docs is not None:
            docs = self.config.process_docs(docs)
        self.dataset = datasets.DatasetDict({split: docs})
        media = [name for name, feat in docs.features.items() if isinstance(feat, datasets.Image)]
        self.dataset_no_image = datasets.DatasetDict({split: docs.remove_columns(media)})

    def _require_data(self, kwargs: dict) -> None:
        """Fail at once, naming the fix, when the builder's data source cannot be read.

        Usually already checked for all selected tasks at once (:mod:`lmms_probe_tasks.registry`);
        this covers tasks built another way. The checks are cached, so a second one is free.
        """
        from lmms_probe_tasks.data.sources import DataUnavailableError, format_unavailable

        problem = self.data_problem(kwargs)
        if problem is not None:
            raise DataUnavailableError(format_unavailable({self.config.task: problem}))

    @staticmethod
    def data_problem(dataset_kwargs: Mapping[str, Any]) -> Any:
        """Return why the data of a task with these ``dataset_kwargs`` cannot be read now, or None.

        Cheap (file checks, at most one short hub request per dataset id); builders without a
        source check (generated data), or a ``builder`` that does not import, give None (the
        build then raises its own error).

        Args:
            dataset_kwargs: The YAML's ``dataset_kwargs``: ``builder`` and its arguments.

        Returns:
            None, or a :class:`lmms_probe_tasks.data.sources.SourceProblem`.
        """
        from lmms_probe_tasks.data.sources import source_problem

        kwargs = dict(dataset_kwargs)
        name = kwargs.pop("builder", None)
        try:
            builder = load_builder(name) if isinstance(name, str) else None
        except ValueError:
            return None
        return source_problem(builder, kwargs) if builder is not None else None

    def _build_docs(self, kwargs: dict) -> Any:
        """Call the builder; keep its report (what it skipped and why) for every artifact."""
        if "builder" not in kwargs:
            raise ValueError(
                f"task {self.config.task}: dataset_kwargs.builder is missing; name a function returning "
                f"lmms_probe_tasks.data.contract.BuiltDocs, e.g. {_BUILDER_EXAMPLE}"
            )
        name = kwargs.pop("builder")
        built = load_builder(name)(**kwargs)
        if not isinstance(built, BuiltDocs):
            raise TypeError(
                f"task {self.config.task}: dataset_kwargs.builder {name!r} returned {type(built).__name__}, "
                "not a BuiltDocs. Fix: end the builder with `return BuiltDocs(docs, report)` "
                "(from lmms_probe_tasks.data.contract import BuiltDocs; report: a dict of what it skipped "
                "and why, {} if nothing)"
            )
        self.data_report = built.report
        return built.docs

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

    def _features(self, doc: dict, response: Any) -> transport.DocFeatures:
        """Take the document's features out of the in-process store, or fail with the fix."""
        features = transport.STORE.take(response) if isinstance(response, str) else None
        if features is None:
            raise RuntimeError(
                f"task {self.config.task}, doc {doc.get('uid')!r}: the model returned {str(response)[:80]!r}, "
                "not a feature key. Probe tasks need --model hidden_states (lmms_probe_tasks) run in this process; "
                "responses replayed from a cache or made by another model carry no features."
            )
        return features

    def process_results(self, doc: dict, results: list, full_docs: Any = None) -> dict:
        """Emit the carrier payload (features) first, then one small payload per other row.

        Args:
            doc: The document.
            results: The model's responses (one feature key).
            full_docs: Unused (lmms-eval's signature).

        Returns:
            Metric name -> payload, in aggregation order.
        """
        features = self._features(doc, results[0] if results else None)
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
            # Control-task types only where the task declares one that recurs across the split.
            "type": self._field(doc, self.spec.type_field, ()) if self.spec.type_field else None,
            "text": doc.get("text") or "",
        }
        m = self.spec.metric
        # Insertion order is aggregation order (lmms-eval keeps rank 0's key order):
        # the carrier row comes first and fits every layer; the others read its result.
        payload = {f"{m}_best": carrier}
        payload.update({layer_key(m, layer, n_layers): base for layer in layer_ids})
        payload.update({f"{m}_last": base, CHANCE_ROW[m]: base, "best_layer": base})
        if not self.metric_names:
            self.metric_names = list(payload)
        return payload

    # -- aggregation (rank 0) ---------------------------------------------
    def aggregation(self) -> Mapping:
        """Return the aggregations for the run-time metric names."""
        return _Aggregations(self)

    def higher_is_better(self) -> dict:
        """Return the direction of every metric seen in this run (``best_layer`` has none)."""
        return {name: (None if name == "best_layer" else True) for name in self.metric_names}

    def aggregate_row(self, items: list[dict], which: int | str, args: Any = None) -> float:
        """Return one row: a layer's score, ``best``, ``last`` or ``best_layer``.

        The first call (the carrier row, whose items hold the features) runs the protocol
        over all layers and writes the artifacts; every other call reads that result.

        Args:
            items: The row's payloads from every document.
            which: A layer index, or ``best``/``last``/``best_layer``.
            args: lmms-eval's CLI namespace (for ``output_path``).

        Returns:
            The row's value (NaN for a layer that was not scored).
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
        items = canonical(items)
        y, is_train = self._targets(items)
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
                types=np.array([item["type"] for item in items]) if self.spec.type_field else None,
                layer_ids=items[0]["layers"],
            )
        self._warn(result)
        rows = layer_rows(result, self.spec.metric, items[0]["n_layers"])
        text_score = text_only_score([item["text"] for item in items], y, is_train, self.spec.kind)
        summary = summarize(result, rows, self.spec.metric, text_score)
        report_config = self._report_config(config, items[0]["meta"], is_train)
        report = ProbeReport(self.config.task, self.spec.metric, rows, summary, report_config)
        if output_path:
            paths = write_report(report, f"{output_path}/probes")
            logger.info(f"task {self.config.task}: per-layer results written to {paths['json'].parent}")
            if items[0]["meta"].get("save_features"):
                self._export(x, items, y, is_train, paths["json"].parent)
        return report

    def _warn(self, result: Any) -> None:
        """One warning per thing a reader of the table must know: NaN rows, unprobed layers, C at the grid edge."""
        if result.reason:
            logger.warning(
                f"task {self.config.task}: layer scores are NaN: {result.reason} "
                f"(probe-train {result.n_train}, probe-test {result.n_test} docs). Raise --limit or the data sizes."
            )
        if result.layer_reason:
            logger.warning(
                f"task {self.config.task}: layers {sorted(result.layer_reason)} not probed (NaN rows; every other "
                f"layer is scored): {sorted(set(result.layer_reason.values()))}"
            )
        for note in result.notes:
            if "edge of the grid" in note:
                logger.warning(f"task {self.config.task}: {note} (layers marked C_at_grid_edge in the JSON)")

    def _export(self, x: np.ndarray, items: list[dict], y: np.ndarray, is_train: np.ndarray, folder: Any) -> None:
        """Write ``features/<task>/<site>.safetensors`` beside the report (``save_features=true``)."""
        uids = self.dataset[self.config.test_split]["uid"]
        row_of = {uid: i for i, uid in enumerate(uids)}  # lmms-eval's doc_id is the row of the evaluated split
        meta = items[0]["meta"]
        site = meta.get("site", "language")
        path = export_features(
            folder / "features" / self.config.task, site, x,
            doc_id=np.array([row_of[item["uid"]] for item in items]), is_train=is_train, target=y,
            layers=list(items[0]["layers"]),
            metadata={
                "task": self.config.task, "site": site, "pooling": meta.get("pooling"), "model": meta.get("model"),
                "revision": meta.get("revision"), "class_names": list(self.spec.label_names),
                "module_names": meta.get("module_names", []), "kind": self.spec.kind,
            },
        )  # fmt: skip
        logger.info(f"task {self.config.task}: features written to {path}")

    def _report_config(self, config: ProtocolConfig, extraction: dict, is_train: np.ndarray) -> dict:
        """The report's ``config``: protocol, extraction, data and library versions."""
        return {
            "protocol": config.to_dict(),
            "semantics": self.spec.semantics,
            "extraction": extraction,
            "data": {
                "n_train": int(is_train.sum()),
                "n_test": int((~is_train).sum()),
                "label_field": self.spec.label_field,
                "label_names": list(self.spec.label_names),
                "group_field": self.spec.group_field or "auto (image_id, scene_id or uid)",
                "type_field": self.spec.type_field or "none: the control task is not applicable",
                "builder": dict(self.config.dataset_kwargs or {}),
                "report": self.data_report,
            },
            "prompt_template": (self.lmms_eval_specific_kwargs or {}).get("prompt"),
            "versions": versions(),
        }
