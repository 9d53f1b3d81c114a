"""The whole model through the real ``lmms-eval`` CLI: vision rows, the projector row, ``modules=`` rows, applicability.

Each exported feature (``save_features=true``) is checked against an independent
computation: the vision rows against the encoder's own ``output_hidden_states`` on each
document's image, LLaVA's projector row against ``get_image_features`` and against the
decoder's row 0 under ``pooling=image`` (the first hidden state holds the projected image
features in place), and a ``modules=`` glob over the decoder's layers against the decoder
rows they feed.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.test_cli_e2e import _layer_rows, _lmms_eval, _results

pytestmark = pytest.mark.e2e

OBJECTS, ENTAILMENT = "probe_shapes_objects", "probe_shapes_entailment"


def _features(out: Path, model: str, task: str, site: str) -> dict[str, Any]:
    from safetensors.numpy import load_file

    return load_file(out / "probes" / model / "features" / task / f"{site}.safetensors")


def _close(ours: np.ndarray, reference: np.ndarray, rtol: float = 1e-3) -> None:
    """Equal within ``rtol`` of each vector's largest component (features travel as scaled float16: 2^-11)."""
    scale = np.abs(reference).max(axis=-1, keepdims=True)
    worst = float((np.abs(ours - reference) / scale).max())
    assert worst <= rtol, worst


def _docs(task: str) -> list[dict]:
    from lmms_probe_tasks.data import shapes

    built = (shapes.object_docs if task == OBJECTS else shapes.entailment_docs)()
    return list(built.docs)


def _encoder_rows(arch: str, ckpt: Path, images: list[Any]) -> np.ndarray:
    """``[docs, vision rows, d]``: each document alone through its encoder's own forward (tests/test_vision_sites)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from lmms_probe_tasks.extract import families
    from lmms_probe_tasks.extract.vision import check_vision
    from tests.test_vision_sites import _reference

    model = AutoModelForImageTextToText.from_pretrained(ckpt, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(ckpt)
    family, site = families.lookup(model.config), check_vision(model.config, families.family_key(model.config))
    return np.stack([_reference(model, processor, family, site, [image]).numpy() for image in images])


def _cli(tmp_path: Path, ckpt: str, model_args: str, tasks: str, limit: int) -> tuple[dict, str]:
    model = f"pretrained={ckpt},feature_cache=none,save_features=true,{model_args}"
    args = ["--model", "hidden_states", "--model_args", model, "--batch_size", "4", "--tasks", tasks,
            "--limit", str(limit), "--output_path", "out"]  # fmt: skip
    log = _lmms_eval(args, cwd=tmp_path)
    return _results(tmp_path / "out", log), log


@pytest.fixture(scope="module")
def llava_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    """One run of every site on tiny LLaVA: ``sites=[vision,projector,language]``, a glob over the decoder layers."""
    from lmms_probe_tasks.tiny import build_tiny

    root = tmp_path_factory.mktemp("sites")
    build_tiny("llava", root / "tiny")
    args = "'sites=[vision,projector,language]',modules=model.language_model.layers.*,pooling=image"
    # --model_args is one argv item here (no shell): drop the shell quotes.
    results, log = _cli(root, "./tiny", args.replace("'", ""), f"{OBJECTS},{ENTAILMENT}", 60)
    return root, results, log


def test_llava_vision_rows_are_the_encoders_own_states(llava_run: tuple[Path, dict, str]) -> None:
    root, results, _ = llava_run
    exported = _features(root / "out", "tiny", OBJECTS, "vision")
    docs = _docs(OBJECTS)
    picks = [0, 7, 31]  # rows of the export, i.e. documents
    images = [docs[int(exported["doc_id"][i])]["image"] for i in picks]
    reference = _encoder_rows("llava", root / "tiny", images)  # [docs, rows, d]
    _close(exported["features"][:, picks].transpose(1, 0, 2), reference)
    assert list(exported["layer"]) == list(range(reference.shape[1]))  # embeddings + every encoder layer
    rows = {k: v for k, v in results[OBJECTS].items() if k.split(",")[0].startswith("map_v")}
    assert len([k for k in rows if "stderr" not in k]) == reference.shape[1]
    assert all(math.isfinite(v) for k, v in rows.items() if "stderr" not in k)


def test_llava_projector_row_is_the_projected_image_and_the_decoder_input(llava_run: tuple[Path, dict, str]) -> None:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    root, _, _ = llava_run
    projector = _features(root / "out", "tiny", OBJECTS, "projector")
    language = _features(root / "out", "tiny", OBJECTS, "language")
    assert projector["features"].shape[0] == 1 and list(language["layer"])[0] == 0
    # Under pooling=image the decoder's row 0 is the same mean over the image positions.
    np.testing.assert_array_equal(projector["features"][0], language["features"][0])
    # Independently: the model's own get_image_features (vision tower + projector), mean over the image's tokens.
    model = AutoModelForImageTextToText.from_pretrained(root / "tiny", dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(root / "tiny")
    docs = _docs(OBJECTS)
    picks = [3, 20]
    pixels = processor.image_processor([docs[int(projector["doc_id"][i])]["image"] for i in picks], return_tensors="pt")
    with torch.inference_mode():
        out = model.model.get_image_features(pixel_values=pixels["pixel_values"])
    feats = out.pooler_output if hasattr(out, "pooler_output") else out  # transformers 5 / 4.5x
    reference = np.stack([f.float().reshape(-1, f.shape[-1]).mean(dim=0).numpy() for f in feats])
    _close(projector["features"][0, picks], reference)


def test_a_glob_over_the_decoder_layers_reproduces_the_decoder_rows(llava_run: tuple[Path, dict, str]) -> None:
    root, results, _ = llava_run
    modules = _features(root / "out", "tiny", OBJECTS, "modules")
    language = _features(root / "out", "tiny", OBJECTS, "language")
    n = modules["features"].shape[0]
    assert n == language["features"].shape[0] - 1  # one module per decoder layer; row 0 is the embeddings
    # Module k's output is decoder row k + 1 (the last one before the final norm: row L is after it).
    np.testing.assert_array_equal(modules["features"][: n - 1], language["features"][1:n])
    table = _layer_rows(results[OBJECTS], "map")
    module_rows = {k.split(",")[0]: v for k, v in results[OBJECTS].items() if re.match(r"map_m\d+,", k)}
    for k in range(n - 1):
        assert module_rows[f"map_m{k:02d}"] == table[f"map_l{k + 1:02d}"]
    report = json.loads((root / "out" / "probes" / "tiny" / f"{OBJECTS}.json").read_text())
    names = [f"model.language_model.layers.{k}" for k in range(n)]
    assert report["config"]["extraction"]["module_names"] == names
    assert [row["module"] for row in report["sites"]["modules"]] == names
    saved = json.loads(sorted((root / "out").glob("*/*_results.json"))[-1].read_text())
    assert saved["configs"][OBJECTS]["metadata"]["modules"] == {f"m{k:02d}": name for k, name in enumerate(names)}
    with (root / "out" / "probes" / "tiny" / f"{OBJECTS}.csv").open() as handle:
        csv_modules = [row["module"] for row in csv.DictReader(handle) if row["site"] == "modules"]
    assert csv_modules == names


def test_image_only_rows_are_not_applicable_where_the_target_reads_the_text(llava_run: tuple[Path, dict, str]) -> None:
    root, results, _ = llava_run
    rows = {k.split(",")[0]: v for k, v in results[ENTAILMENT].items() if "stderr" not in k}
    image_only = [k for k in rows if k.startswith(("acc_v", "acc_proj"))]
    assert image_only and all(not math.isfinite(float(rows[k])) for k in image_only), rows
    assert all(math.isfinite(rows[f"acc_m{k:02d}"]) for k in range(4))  # decoder modules read the text: probed
    report = json.loads((root / "out" / "probes" / "tiny" / f"{ENTAILMENT}.json").read_text())
    for site in ("vision", "projector"):
        assert all(row["acc"] is None and row["reason"].startswith("not applicable") for row in report["sites"][site])
    with (root / "out" / "probes" / "tiny" / f"{ENTAILMENT}.csv").open() as handle:
        cells = [row["acc"] for row in csv.DictReader(handle) if row["site"] in ("vision", "projector")]
    assert cells and set(cells) == {""}
    objects = json.loads((root / "out" / "probes" / "tiny" / f"{OBJECTS}.json").read_text())
    assert all(row["map"] is not None and not row["reason"] for row in objects["sites"]["vision"])


@pytest.mark.parametrize("arch", ["qwen2_vl", "idefics3"])
def test_vision_rows_through_the_cli_are_the_encoders_own_states(arch: str, tmp_path: Path) -> None:
    from lmms_probe_tasks.tiny import build_tiny

    build_tiny(arch, tmp_path / arch)
    results, log = _cli(tmp_path, f"./{arch}", "sites=vision", OBJECTS, 40)
    rows = [k for k in results[OBJECTS] if k.startswith("map_v") and "stderr" not in k]
    assert rows and not [k for k in results[OBJECTS] if re.match(r"map_l\d", k)], log[-2000:]
    exported = _features(tmp_path / "out", arch, OBJECTS, "vision")
    docs = _docs(OBJECTS)
    picks = [0, 9, 25]
    reference = _encoder_rows(arch, tmp_path / arch, [docs[int(exported["doc_id"][i])]["image"] for i in picks])
    _close(exported["features"][:, picks].transpose(1, 0, 2), reference)
    assert len(rows) == reference.shape[1]


def test_sites_vision_alone_never_runs_the_decoder_and_sharing_keeps_it_exact(tmp_path: Path) -> None:
    """In process: no decoder layer runs for sites=vision; the vision tower runs once per image with sharing."""
    from lmms_eval.api.instance import Instance

    from lmms_probe_tasks import transport
    from lmms_probe_tasks.models.hidden_states import HiddenStates
    from lmms_probe_tasks.tiny import build_tiny

    build_tiny("llava", tmp_path / "tiny")
    docs = _docs(ENTAILMENT)[:24]  # several statements per scene: shared prefixes
    counts = {"decoder": 0, "images": 0}
    features = {}
    for share in (True, False):
        wrapper = HiddenStates(pretrained=str(tmp_path / "tiny"), sites="vision", feature_cache="none",
                               share_prefix=str(share).lower(), batch_size=4)  # fmt: skip
        wrapper.task_dict = {"t": {"test": docs}}
        model = wrapper.model
        hooks = [
            model.model.language_model.layers[0].register_forward_pre_hook(
                lambda *_: counts.__setitem__("decoder", counts["decoder"] + 1)
            ),
            # Images through the tower: the batch size of its pixel input.
            model.model.vision_tower.register_forward_pre_hook(
                lambda module, args: counts.__setitem__("images", counts["images"] + int(args[0].shape[0]))
            ),
        ]
        requests = [
            Instance("generate_until", (d["text"], {"probe": True}, lambda d: [d["image"]], i, "t", "test"), i,
                     {"task": "t", "doc_id": i, "repeats": 1})
            for i, d in enumerate(docs)
        ]  # fmt: skip
        keys = wrapper.generate_until(requests)
        features[share] = np.stack([transport.STORE.take(k)["vision"].layers for k in keys]).astype(np.float32)
        for hook in hooks:
            hook.remove()
        counts[share] = counts["images"]
        counts["images"] = 0
    assert counts["decoder"] == 0  # sites=vision: the pass stops after the encoder's last block
    # With sharing each scene's image goes through the tower once; without, once per document.
    assert counts[True] == len({d["scene_id"] for d in docs}) and counts[False] == len(docs)
    _close(features[True], features[False])
