"""Fakes for harness tests: a document builder and a model with planted per-layer signal."""

from __future__ import annotations

import datasets
import numpy as np
from lmms_eval.api.model import lmms
from PIL import Image

from lmms_probe_tasks import transport
from lmms_probe_tasks.data.contract import BuiltDocs

N_LAYERS = 4
HIDDEN = 8
SIGNAL_LAYER = 2


def planted_docs(n_train: int = 60, n_test: int = 30, seed: int = 0, multilabel: bool = False) -> BuiltDocs:
    """Shuffled union of train/test docs with random labels and a 4x4 image (empty report)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    split = np.array(["train"] * n_train + ["test"] * n_test)
    order = rng.permutation(n)
    image = Image.new("RGB", (4, 4))
    columns = {
        "uid": [f"doc-{i:04d}" for i in order],
        "probe_split": list(split[order]),
        "image": [image] * n,
        "text": [f"statement {i}" for i in order],
    }
    if multilabel:
        columns["labels"] = [sorted(int(c) for c in np.flatnonzero(rng.random(3) < 0.5)) for _ in range(n)]
    else:
        columns["label"] = [int(v) for v in rng.integers(0, 3, n)]
    features = datasets.Features(
        {
            "uid": datasets.Value("string"),
            "probe_split": datasets.Value("string"),
            "image": datasets.Image(),
            "text": datasets.Value("string"),
            **(
                {"labels": datasets.List(datasets.ClassLabel(names=["a", "b", "c"]))}
                if multilabel
                else {"label": datasets.Value("int64")}
            ),
        }
    )
    return BuiltDocs(datasets.Dataset.from_dict(columns, features=features))


def bare_dataset(**kwargs) -> datasets.Dataset:
    """A builder that breaks the contract: it returns the Dataset alone, not a BuiltDocs."""
    return datasets.Dataset.from_dict({"uid": ["doc-0"], "probe_split": ["train"], "label": [0]})


class PlantedModel(lmms):
    """Returns features whose label is decodable only at SIGNAL_LAYER; counts calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.prompts: list[str] = []

    @property
    def device(self) -> str:
        return "cpu"

    def generate_until(self, requests):
        out = []
        for req in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
            doc = self.task_dict[task][split][doc_id]
            if not gen_kwargs.get("probe"):
                out.append("a generated answer")
                continue
            self.calls += 1
            self.prompts.append(context)
            rng = np.random.default_rng(abs(hash(doc["uid"])) % 2**32)
            feats = rng.normal(size=(N_LAYERS + 1, HIDDEN)).astype(np.float32)
            if "labels" in doc:
                for c in doc["labels"]:
                    feats[SIGNAL_LAYER, c] += 4.0
            else:
                feats[SIGNAL_LAYER, doc["label"]] += 4.0
            meta = {
                "model": "fake/planted",
                "pooling": "last",
                "layers": list(range(N_LAYERS + 1)),
                "n_layers": N_LAYERS,
            }
            out.append(
                transport.STORE.put(transport.DocFeatures(feats.astype(np.float16), meta), hint=f"{task}/{doc_id}")
            )
        return out

    def loglikelihood(self, requests):
        raise NotImplementedError

    def generate_until_multi_round(self, requests):
        raise NotImplementedError
