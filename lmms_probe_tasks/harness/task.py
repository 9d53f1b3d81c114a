"""The probe task class: lmms-eval glue from documents to per-layer rows (the probe core does the fitting).

Every probe task is a :class:`ProbeTask` (declared with ``class:`` in the shared
YAML template). Compared with a plain YAML task it

* builds its documents itself (``download``) from a builder named in ``dataset_kwargs``,
  as one shuffled union of probe-train and probe-test docs, because lmms-eval only
  runs the model on one split;
* turns each document's features (per probed site: decoder layers, vision encoder,
  projector, named modules; :mod:`lmms_probe_tasks.harness.sites`) into metric payloads: one
  *carrier* payload holds the features, every other row's payload only the doc id; the
  carrier row is aggregated first and fits **all layers in one vectorised pass**
  (:func:`lmms_probe_tasks.probe.run_protocol`: dev-selected L2, seeds, bootstrap CIs,
  controls, MDL); every ``<metric>_lNN`` (``_vNN``, ``_proj``, ``_mNN``) row and the summary rows read that result, so
  each layer's probe is trained once per run, not once per table row;
* declares its metric names at run time (the number of layers depends on the model);
* fails at once, with the fix, where the harness would otherwise retry five times.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from lmms_eval.api.task import ConfigurableTask
from loguru import logger

from lmms_probe_tasks import transport
from lmms_probe_tasks.data.contract import BuiltDocs, check_docs
from lmms_probe_tasks.harness.results import canonical, describe_run
from lmms_probe_tasks.harness.sites import (
    Aggregations,
    not_applicable,
    report_rows,
    row_key,
    site_depth,
    site_rows_of,
    site_summary,
)
from lmms_probe_tasks.harness.spec import CHANCE_ROW, ProbeSpec, class_names
from lmms_probe_tasks.numerics import flush_denormals
from lmms_probe_tasks.probe import ProtocolConfig, multi_hot, run_protocol, text_only_score
from lmms_probe_tasks.report import ProbeReport, write_report
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
        names = transport.ACTIVE_MODEL.get("module_names")
        if names and isinstance(self.config.metadata, dict):
            # The config lmms-eval copies into its results file: the modules= rows' names go with it.
            width = len(str(len(names) - 1))
            self.config.metadata["modules"] = {f"m{k:0{max(2, width)}d}": name for k, name in enumerate(names)}

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

    def _features(self, doc: dict, response: Any) -> dict[str, transport.DocFeatures]:
        """Take the document's features (site -> features) out of the in-process store, or fail with the fix."""
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
        by_site = self._features(doc, results[0] if results else None)
        meta = next(iter(by_site.values())).meta
        # Row r of a site's array is its index site_rows[site][r] (language: the layers arg).
        site_rows = site_rows_of(meta)
        layer_ids = site_rows.get("language", meta["layers"])
        n_layers = meta.get("n_layers", layer_ids[-1] if layer_ids else 0)
        group = self._field(doc, self.spec.group_field, ("image_id", "scene_id"))
        base = {"uid": doc.get("uid"), "train": doc["probe_split"] == "train", "y": doc[self.spec.label_field]}
        carrier = {
            **base,
            # Per site: the cache file's path when there is one (rank 0 reads it from disk), else the array.
            "sites": {site: {"x_path": f.path} if f.path else {"x": f.layers} for site, f in by_site.items()},
            "site_rows": site_rows,
            "layers": list(layer_ids),
            "n_layers": n_layers,
            "meta": meta,
            "group": group,
            # Control-task types only where the task declares one that recurs across the split.
            "type": self._field(doc, self.spec.type_field, ()) if self.spec.type_field else None,
            "text": doc.get("text") or "",
        }
        m = self.spec.metric
        # Insertion order is aggregation order (lmms-eval keeps rank 0's key order):
        # the carrier row comes first and fits every layer; the others read its result.
        payload = {f"{m}_best": carrier}
        for site, ids in site_rows.items():
            width = n_layers if site == "language" else max(ids, default=0)
            payload.update({row_key(m, site, index, width): base for index in ids})
        payload.update({f"{m}_last": base, CHANCE_ROW[m]: base, "best_layer": base})
        if not self.metric_names:
            self.metric_names = list(payload)
        return payload

    # -- aggregation (rank 0) ---------------------------------------------
    def aggregation(self) -> Mapping:
        """Return the aggregations for the run-time metric names."""
        return Aggregations(self)

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
            if not items or "sites" not in items[0]:
                raise RuntimeError(
                    f"task {self.config.task}: a row was aggregated before the feature-carrying row; "
                    "lmms-eval changed its aggregation order (please report this)"
                )
            self._report = self._finish(items, getattr(args, "output_path", None))
        if isinstance(which, tuple):
            return self._report.site_scores.get(which, math.nan)
        return self._report.summary[which]

    def _targets(self, items: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        is_train = np.array([item["train"] for item in items], dtype=bool)
        labels = [item["y"] for item in items]
        if self.spec.kind == "multilabel":
            return multi_hot(labels, self.spec.n_classes), is_train
        return np.asarray(labels, dtype=np.int64), is_train

    def _finish(self, items: list[dict], output_path: str | None) -> ProbeReport:
        """Fit every site's rows, assemble the report, write the artifacts."""
        items = canonical(items)
        y, is_train = self._targets(items)
        config = self.spec.protocol_config(self.config.generation_kwargs)
        meta, site_rows, n_layers = items[0]["meta"], items[0]["site_rows"], items[0]["n_layers"]
        groups = np.array([item["group"] for item in items])
        types = np.array([item["type"] for item in items]) if self.spec.type_field else None
        rows, results, xs = {}, {}, {}
        for site, ids in site_rows.items():
            why = {i: not_applicable(self.config.task, site, meta, i, self.spec.image_only) for i in ids}
            reasons = {i: reason for i, reason in why.items() if reason}
            x = xs[site] = layer_major([item["sites"][site] for item in items])
            keep = [r for r, index in enumerate(ids) if index not in reasons]
            if keep:
                with flush_denormals():
                    results[site] = run_protocol(
                        x if len(keep) == len(ids) else x[keep], y, is_train, kind=self.spec.kind, config=config,
                        groups=groups, types=types, layer_ids=[ids[r] for r in keep],
                    )  # fmt: skip
                self._warn(results[site], site)
            depth = site_depth(site, ids, n_layers)
            rows[site] = report_rows(site, results.get(site), ids, reasons, self.spec.metric, depth, meta)
        text_score = text_only_score([item["text"] for item in items], y, is_train, self.spec.kind)
        report = self._assemble(rows, results, text_score, config, meta, is_train)
        if output_path:
            paths = write_report(report, f"{output_path}/probes")
            logger.info(f"task {self.config.task}: per-layer results written to {paths['json'].parent}")
            if meta.get("save_features"):
                for site, ids in site_rows.items():
                    self._export(xs[site], items, y, is_train, paths["json"].parent, site, ids)
        return report

    def _assemble(
        self, rows: dict, results: dict, text_score: float, config: ProtocolConfig, meta: dict, is_train: np.ndarray
    ) -> ProbeReport:
        """The report: the decoder's rows (or the first probed site's) give the summary; every site's rows go in."""
        summary = site_summary(rows, results, self.spec.metric, text_score)
        report_config = describe_run(
            self.spec, config, meta, is_train, dict(self.config.dataset_kwargs or {}), self.data_report,
            (self.lmms_eval_specific_kwargs or {}).get("prompt"),
        )  # fmt: skip
        others = {site: site_rows for site, site_rows in rows.items() if site != "language"}
        return ProbeReport(self.config.task, self.spec.metric, rows.get("language", []), summary, report_config, others)

    def _warn(self, result: Any, site: str = "language") -> None:
        """One warning per thing a reader of the table must know: NaN rows, unprobed layers, C at the grid edge."""
        task = self.config.task if site == "language" else f"{self.config.task} ({site} rows)"
        if result.reason:
            logger.warning(
                f"task {task}: layer scores are NaN: {result.reason} "
                f"(probe-train {result.n_train}, probe-test {result.n_test} docs). Raise --limit or the data sizes."
            )
        if result.layer_reason:
            logger.warning(
                f"task {task}: layers {sorted(result.layer_reason)} not probed (NaN rows; every other "
                f"layer is scored): {sorted(set(result.layer_reason.values()))}"
            )
        for note in result.notes:
            if "edge of the grid" in note:
                logger.warning(f"task {task}: {note} (layers marked C_at_grid_edge in the JSON)")

    def _export(
        self, x: np.ndarray, items: list[dict], y: np.ndarray, is_train: np.ndarray, folder: Any, site: str,
        ids: list[int],
    ) -> None:  # fmt: skip
        """Write ``features/<task>/<site>.safetensors`` beside the report (``save_features=true``)."""
        uids = self.dataset[self.config.test_split]["uid"]
        row_of = {uid: i for i, uid in enumerate(uids)}  # lmms-eval's doc_id is the row of the evaluated split
        meta = items[0]["meta"]
        path = export_features(
            folder / "features" / self.config.task, site, x,
            doc_id=np.array([row_of[item["uid"]] for item in items]), is_train=is_train, target=y, layers=list(ids),
            metadata={
                "task": self.config.task, "site": site, "pooling": meta.get("pooling"), "model": meta.get("model"),
                "revision": meta.get("revision"), "class_names": list(self.spec.label_names),
                "module_names": meta.get("module_names", []) if site == "modules" else [], "kind": self.spec.kind,
            },
        )  # fmt: skip
        logger.info(f"task {self.config.task}: {site} features written to {path}")
