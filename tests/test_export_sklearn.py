"""The exported features (``save_features=true``) are enough to re-probe a layer with scikit-learn.

One real ``lmms-eval`` run on the tiny LLaVA writes
``<output_path>/probes/<model>/features/<task>/language.safetensors`` for a multiclass task
(accuracy) and a multilabel one (mAP). A scikit-learn probe on one exported layer, fitted
the way the protocol fits its reported probe (:mod:`lmms_probe_tasks.probe.protocol`), then
scores what ``<task>.json`` reports for that layer; and the file's tensors are checked
against the report and against the documents rebuilt from the dataset builders.

The protocol's reported probe, step by step (``refit="train+dev"``, the YAMLs' ``fast``
preset: one seed, C grid 1e-3 .. 10):

1. each layer is standardised on all probe-train rows (population std; a constant feature
   keeps scale 1), as ``StandardScaler`` fitted on probe-train;
2. C is chosen on a dev split carved out of probe-train by whole groups (``scene_id``);
   the report keeps the winner as ``chosen_C`` (one seed: exactly that C, no median);
3. the chosen C is refitted on *all* probe-train rows (dev included) as L2 logistic
   regression with an unpenalised intercept and no class weights: a softmax over the
   classes (three or more), one sigmoid (two), one sigmoid per class (multilabel), i.e.
   ``LogisticRegression`` / ``OneVsRestClassifier(LogisticRegression)``;
4. the refit scores probe-test: accuracy, or the mean over the classes with a positive in
   probe-test of ``average_precision_score``.

Taking ``chosen_C`` from the report skips step 2: nothing of the dev split or its seed
stream is needed, so the comparison involves only the two solvers.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.test_cli_e2e import _lmms_eval, _results

pytestmark = pytest.mark.e2e

#: Task -> the report's score column.
TASKS = {"probe_shapes_entailment": "acc", "probe_shapes_objects": "map"}
#: Docs evaluated: the first 120 of the shuffled split give 80 probe-train / 40 probe-test, which
#: clears the minimum-evidence rule (>= 20 probe-test docs, >= 5 docs of every class on each side).
LIMIT = 120
#: Our float32 L-BFGS stops at a max-abs gradient of 1e-4, scikit-learn's float64 lbfgs (tol 1e-8)
#: far closer to the optimum; on these features their probe-test logits differ by <= 3e-3 nats over
#: the whole fast C grid (multiclass, measured). So a doc can be classified differently only if its
#: margin (top minus runner-up log-probability) under scikit-learn's probe is below 0.01 nats, and
#: the accuracies must agree up to those docs. The middle layer has none (smallest margin 0.011):
#: the accuracies must be equal, and are. No standardisation, a fit on 80 % of probe-train or C x 10
#: each move it by 1-2 of the 40 probe-test docs.
NEAR_NATS = 0.01
#: mAP difference allowed. The same last-digit differences can only swap near-tied docs in a class's
#: ranking; one adjacent positive/negative swap at the very top of the sparsest class (14 probe-test
#: positives, 6 classes) would move mAP by 0.5 / 14 / 6 = 0.006, lower in the ranking far less.
#: Measured: 1e-16 at the middle layer, 4e-4 at worst over all layers. No standardisation (0.05), a
#: fit on 80 % of probe-train (0.016) or C x 10 (0.013) fail it.
MAP_TOL = 0.005


@dataclass(frozen=True)
class _Run:
    """The one CLI run every test here reads.

    Attributes:
        ckpt: The tiny LLaVA checkpoint folder.
        folder: ``<output_path>/probes/<model>``.
        results: lmms-eval's ``results`` section (task -> row -> value).
    """

    ckpt: Path
    folder: Path
    results: dict[str, Any]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> _Run:
    """Build the tiny LLaVA and run both tasks once through the CLI with ``save_features=true``."""
    from lmms_probe_tasks.tiny import build_tiny

    root = tmp_path_factory.mktemp("export_sklearn")
    ckpt = build_tiny("llava", root / "tiny-llava")
    log = _lmms_eval(
        [
            "--model", "hidden_states",
            "--model_args", f"pretrained={ckpt},save_features=true,feature_cache=none",
            "--tasks", ",".join(TASKS),
            "--limit", str(LIMIT),
            "--batch_size", "8",
            "--output_path", "out",
        ],
        cwd=root,
    )  # fmt: skip
    results = _results(root / "out", log)
    assert set(results) == set(TASKS), log[-3000:]
    folder = next(p for p in (root / "out" / "probes").iterdir() if p.is_dir())
    return _Run(ckpt, folder, results)


def _exported(run: _Run, task: str) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, Any]]:
    """The task's exported tensors, their metadata and the task's report (``<task>.json``)."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    path = run.folder / "features" / task / "language.safetensors"
    with safe_open(str(path), "np") as handle:
        metadata = handle.metadata()
    report = json.loads((run.folder / f"{task}.json").read_text())
    return load_file(path), metadata, report


def _sklearn_score(x: np.ndarray, target: np.ndarray, train: np.ndarray, C: float) -> tuple[float, int]:
    """Fit the reported probe's model with scikit-learn on probe-train and score it on probe-test.

    Args:
        x: ``[docs, dim]`` one layer's features.
        target: ``[docs]`` class ids or ``[docs, classes]`` 0/1.
        train: ``[docs]`` bool, probe-train (dev included: the protocol refits on it all).
        C: The layer's ``chosen_C``.

    Returns:
        ``(score, near)``: probe-test accuracy (multiclass) or mAP over the classes with a
        positive in probe-test; and, multiclass, the probe-test docs within :data:`NEAR_NATS`
        of the decision boundary (0 for multilabel).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, average_precision_score
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # Float64 and a tight tol: scikit-learn's side is the exact optimum, so any difference is ours.
    logreg = LogisticRegression(C=C, max_iter=10_000, tol=1e-8)
    multilabel = target.ndim == 2
    probe = make_pipeline(StandardScaler(), OneVsRestClassifier(logreg) if multilabel else logreg)
    x = x.astype(np.float64)
    test = ~train
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # an unconverged reference proves nothing
        probe.fit(x[train], target[train])
    if not multilabel:
        logp = np.sort(probe.predict_log_proba(x[test]), axis=1)  # top minus runner-up: the logit margin
        near = int((logp[:, -1] - logp[:, -2] < NEAR_NATS).sum())
        return float(accuracy_score(target[test], probe.predict(x[test]))), near
    scored = target[test].any(axis=0)  # AP is undefined for a class without a probe-test positive
    proba = probe.predict_proba(x[test])
    return float(average_precision_score(target[test][:, scored], proba[:, scored], average="macro")), 0


@pytest.mark.parametrize("task", list(TASKS))
def test_a_sklearn_probe_on_one_exported_layer_reproduces_its_reported_score(run: _Run, task: str) -> None:
    tensors, _, report = _exported(run, task)
    metric = TASKS[task]
    index = len(tensors["layer"]) // 2  # a middle layer: neither the embeddings nor the last one
    layer = int(tensors["layer"][index])
    (row,) = [r for r in report["layers"] if r["layer"] == layer]
    assert row["n_seeds"] == 1 and row["converged"] and not row["reason"], row  # chosen_C is the C refitted
    train = tensors["split"] == 0
    theirs, near = _sklearn_score(tensors["features"][index], tensors["target"], train, row["chosen_C"])
    assert row[metric] == pytest.approx(run.results[task][f"{metric}_l{layer:02d},none"])  # the JSON is the table
    if metric == "acc":
        # Equal, up to the docs so close to the boundary that the solvers' rounding may flip them.
        assert round(abs(theirs - row["acc"]) * row["n_test"]) <= near, (theirs, row["acc"], near)
    else:
        assert abs(theirs - row["map"]) <= MAP_TOL, (theirs, row["map"])


@pytest.mark.parametrize("task", list(TASKS))
def test_the_exported_file_round_trips_against_the_report_and_the_dataset(run: _Run, task: str) -> None:
    from transformers import AutoConfig

    from lmms_probe_tasks.data import shapes

    tensors, metadata, report = _exported(run, task)
    assert sorted(p.name for p in (run.folder / "features" / task).iterdir()) == ["language.safetensors"]
    features, doc_id, split, target, layer = (tensors[k] for k in ("features", "doc_id", "split", "target", "layer"))
    data, rows = report["config"]["data"], report["layers"]
    text = AutoConfig.from_pretrained(run.ckpt).get_text_config()

    # Shapes: [layers, docs, dim], every other tensor per doc or per layer.
    assert features.shape == (len(rows), LIMIT, text.hidden_size) and np.isfinite(features).all()
    assert doc_id.shape == split.shape == (LIMIT,) and target.shape[0] == LIMIT
    assert layer.tolist() == [r["layer"] for r in rows] == list(range(text.num_hidden_layers + 1))

    # doc_id: lmms-eval's ids of the evaluated docs, i.e. --limit takes rows 0..LIMIT-1 of the split.
    assert sorted(doc_id.tolist()) == list(range(LIMIT))

    # split: the report's counts; n_train includes the dev docs (carved out of it by whole scenes).
    assert set(split.tolist()) <= {0, 1}
    assert int((split == 0).sum()) == data["n_train"] == rows[0]["n_train"]
    assert int((split == 1).sum()) == data["n_test"] == rows[0]["n_test"]
    dev_fraction = report["config"]["protocol"]["dev_fraction"]
    assert math.ceil(dev_fraction * data["n_train"]) <= rows[0]["n_dev"] < data["n_train"]

    # target and split: the builder's documents (defaults, dataset order), looked up by doc_id.
    built = (shapes.entailment_docs if task == "probe_shapes_entailment" else shapes.object_docs)().docs
    ids = doc_id.tolist()
    is_test = np.array([s == "test" for s in built["probe_split"]])[ids]
    np.testing.assert_array_equal(split, is_test.astype(split.dtype))
    if report["config"]["data"]["label_field"] == "label":  # multiclass: class ids
        np.testing.assert_array_equal(target, np.asarray(built["label"])[ids])
    else:  # multilabel: 0/1 per class, in ClassLabel order
        labels = list(built["labels"])
        expected = np.zeros((LIMIT, len(shapes.SHAPE_KINDS)), np.int64)
        for r, i in enumerate(ids):
            expected[r, labels[i]] = 1
        np.testing.assert_array_equal(target, expected)

    # metadata: enough to interpret the file without the report.
    assert metadata["task"] == task and metadata["site"] == "language" and metadata["pooling"] == "last"
    assert metadata["model"] == str(run.ckpt) and json.loads(metadata["module_names"]) == []
    assert json.loads(metadata["class_names"]) == data["label_names"]
    assert metadata["kind"] == ("multiclass" if TASKS[task] == "acc" else "multilabel")
