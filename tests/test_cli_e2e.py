"""End to end through the real ``lmms-eval`` CLI on tiny offline checkpoints.

Each test runs the installed console scripts in a subprocess from a folder outside
the repository, as a user would. lmms-eval exits 0 even when an evaluation fails,
so every check reads the results files, never the exit code alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent


def _exe(name: str) -> str:
    found = BIN / name
    return str(found) if found.exists() else (shutil.which(name) or pytest.skip(f"{name} not installed"))


def _lmms_eval(
    args: list[str], cwd: Path, launcher: list[str] | None = None, timeout: int = 300, env: dict | None = None
) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    env.pop("PYTHONPATH", None)
    cmd = (launcher + ["-m", "lmms_eval"]) if launcher else [_exe("lmms-eval")]
    proc = subprocess.run(cmd + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return proc.stdout + proc.stderr


def _results(out: Path, log: str) -> dict:
    files = sorted(out.glob("*/*_results.json"))
    assert files, f"no results file; lmms-eval said:\n{log[-4000:]}"
    return json.loads(files[-1].read_text())["results"]


def _layer_rows(task_results: dict, metric: str) -> dict[str, float]:
    return {
        k.split(",")[0]: v
        for k, v in task_results.items()
        if k.startswith(f"{metric}_l") and k.split(",")[0][len(metric) + 2 :].isdigit() and "stderr" not in k
    }


def _generation_task(folder: Path, colours: list[str], max_new_tokens: int) -> Path:
    """A folder with an ordinary generation task (``gen_fixture``: "What colour?" about one solid image each)."""
    import datasets
    from PIL import Image

    folder.mkdir()
    datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (24, 24), c) for c in colours], "question": ["What colour?"] * len(colours),
         "answer": list(colours)},
        features=datasets.Features(
            {"image": datasets.Image(), "question": datasets.Value("string"), "answer": datasets.Value("string")}
        ),
    ).to_parquet(str(folder / "docs.parquet"))  # fmt: skip
    (folder / "gen_fixture.yaml").write_text(
        "task: gen_fixture\ndataset_path: parquet\ndataset_kwargs:\n  data_files: docs.parquet\n"
        "test_split: train\noutput_type: generate_until\n"
        "doc_to_visual: !function lmms_probe_tasks.harness.doc_to_visual\n"
        'doc_to_text: "{{question}}"\ndoc_to_target: "{{answer}}"\n'
        f"generation_kwargs: {{max_new_tokens: {max_new_tokens}, until: ['.']}}\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return folder


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory) -> Path:
    from lmms_probe_tasks.tiny import build_tiny

    return build_tiny("llava", tmp_path_factory.mktemp("ckpt") / "tiny-llava")


ALL_TASKS = {
    "probe_shapes_entailment": "acc",
    "probe_shapes_objects": "map",
    "probe_coco_entailment": "acc",
    "probe_coco_objects": "acc",
    "probe_coco_multilabel": "map",
    "probe_snli_ve": "acc",
}


def test_all_probe_tasks_zero_flags_rows_and_artifacts(tiny_llava, tmp_path):
    from transformers import AutoConfig

    from tests.datasets_fixtures import write_coco, write_snli_ve

    # Enough images that every task clears the protocol's minimum evidence (>= 20 probe-test docs).
    coco = write_coco(tmp_path / "coco", n_train=60, n_val=30, corrupt=1)
    snli = write_snli_ve(tmp_path / "snli_ve")
    n_layers = AutoConfig.from_pretrained(tiny_llava).get_text_config().num_hidden_layers
    log = _lmms_eval(
        [
            "--model",
            "hidden_states",
            "--model_args",
            f"pretrained={tiny_llava}",
            "--batch_size",
            "8",
            "--tasks",
            "probe_*",
            "--output_path",
            "out",
            "--gen_kwargs",
            "probe_preset=fast",
        ],
        cwd=tmp_path,
        env={"LMMS_PROBE_COCO_DIR": str(coco.root), "LMMS_PROBE_SNLI_VE_DIR": str(snli.root)},
    )
    results = _results(tmp_path / "out", log)
    assert set(results) == set(ALL_TASKS)
    folder = next(p for p in (tmp_path / "out" / "probes").iterdir() if p.is_dir())
    corrupt_id = coco.corrupt[0]
    for task in ("probe_coco_entailment", "probe_coco_objects", "probe_coco_multilabel"):
        report = json.loads((folder / f"{task}.json").read_text())["config"]["data"]["report"]
        assert corrupt_id in json.dumps(report), f"{task}: the corrupt image is not reported"
    for task, metric in ALL_TASKS.items():
        rows = _layer_rows(results[task], metric)
        assert sorted(rows) == [f"{metric}_l{i:02d}" for i in range(n_layers + 1)]
        assert all(0.0 <= v <= 1.0 for v in rows.values())
        assert f"|{metric}_l{n_layers:02d}" in log.replace(" ", "")  # printed in the table
        report = json.loads((folder / f"{task}.json").read_text())
        assert [r["layer"] for r in report["layers"]] == list(range(n_layers + 1))
        assert report["config"]["protocol"]["preset"] == "fast"  # the CLI override reached every task
        data = report["config"]["data"]
        if task.startswith("probe_shapes"):
            assert data["n_train"] == 240 and data["n_test"] == 120
        else:  # the fixtures hold fewer docs than the defaults: all are used, and counted
            assert data["n_train"] == data["report"]["splits"]["train"]["used"] > 0
            assert data["n_test"] == data["report"]["splits"]["test"]["used"] > 0
        extraction = report["config"]["extraction"]
        assert extraction["model"] == str(tiny_llava) and extraction["pooling"] == "last"
        assert {"lmms-eval", "transformers", "torch", "lmms-probe-tasks"} <= set(report["config"]["versions"])
        csv_lines = (folder / f"{task}.csv").read_text().splitlines()
        assert len(csv_lines) == n_layers + 2 and csv_lines[0].startswith("layer,relative_depth," + metric)
        assert (folder / f"{task}.png").read_bytes()[:4] == b"\x89PNG"


def _plain_llava(folder: Path) -> Path:
    """A LLaVA checkpoint written by plain transformers code (no chat template), not by our builder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    words = (
        "[UNK] [PAD] <s> </s> <image> the a is of to and in red green blue circle square star left right above".split()
    )
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=["<image>"],
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=24,
            patch_size=8,
        ),
        text_config=LlamaConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=3,
            num_attention_heads=2,
            num_key_value_heads=2,
            pad_token_id=1,
        ),
        image_token_id=vocab["<image>"],
    )
    torch.manual_seed(0)  # random weights, but the same ones every run: generation must not be flaky
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 24}, crop_size={"height": 24, "width": 24}),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    processor.save_pretrained(folder)
    return folder


def test_foreign_checkpoint_and_a_generation_task_in_one_run(tmp_path):

    ckpt = _plain_llava(tmp_path / "plain-llava")
    gen = _generation_task(tmp_path / "gen_tasks", ["red", "blue", "green"], max_new_tokens=4)
    log = _lmms_eval(
        [
            "--model",
            "hidden_states",
            "--model_args",
            f"pretrained={ckpt},pooling=mean",
            "--tasks",
            "probe_shapes_entailment,gen_fixture",
            "--include_path",
            str(gen),
            "--limit",
            "60",
            "--output_path",
            "out",
            "--log_samples",
        ],
        cwd=tmp_path,
    )
    results = _results(tmp_path / "out", log)
    assert sorted(_layer_rows(results["probe_shapes_entailment"], "acc")) == [f"acc_l{i:02d}" for i in range(4)]
    assert "exact_match,none" in results["gen_fixture"]
    samples = sorted((tmp_path / "out").glob("*/*gen_fixture*.jsonl"))
    assert samples, "generation samples were not logged"
    responses = [json.loads(line)["filtered_resps"] for line in samples[0].read_text().splitlines()]
    assert len(responses) == 3 and not any("lmms-probe-features" in str(r) for r in responses)
    # Greedy text honouring max_new_tokens=4 (this word-level tokenizer decodes one word per token).
    # A random model may stop at once (EOS / "."), so only the bound and one real answer are required.
    assert all(len(str(r).split()) <= 4 for r in responses) and any(str(r).strip() for r in responses)
    report = next((tmp_path / "out" / "probes").glob("*/probe_shapes_entailment.json"))
    extraction = json.loads(report.read_text())["config"]["extraction"]
    assert extraction["pooling"] == "mean" and extraction["prompt_format"].startswith("fallback")


def test_torchrun_two_processes_match_one_process(tiny_llava, tmp_path):
    args = [
        "--model",
        "hidden_states",
        "--model_args",
        f"pretrained={tiny_llava}",
        "--tasks",
        "probe_shapes_entailment,probe_shapes_objects",
        "--limit",
        "90",
    ]
    one = _lmms_eval(args + ["--output_path", "one"], cwd=tmp_path)
    two = _lmms_eval(
        args + ["--output_path", "two"],
        cwd=tmp_path,
        launcher=[_exe("torchrun"), "--nproc_per_node", "2", "--master_port", "29517"],
    )
    r1, r2 = _results(tmp_path / "one", one), _results(tmp_path / "two", two)
    for task, metric in (("probe_shapes_entailment", "acc"), ("probe_shapes_objects", "map")):
        rows1, rows2 = _layer_rows(r1[task], metric), _layer_rows(r2[task], metric)
        assert rows1 and rows1 == rows2


def _builders() -> list[str]:
    from lmms_probe_tasks.tiny import BUILDERS

    return sorted(BUILDERS)


@pytest.mark.parametrize("arch", _builders())
def test_every_family_through_the_cli(arch, tmp_path):
    """Each supported family gives one finite row per layer on the shapes tasks (shared small size)."""
    from transformers import AutoConfig

    from lmms_probe_tasks.tiny import build_tiny, missing_requirements

    if missing_requirements(arch):
        pytest.skip(f"{arch} needs {missing_requirements(arch)}")
    ckpt = build_tiny(arch, tmp_path / arch)
    n_layers = AutoConfig.from_pretrained(ckpt).get_text_config().num_hidden_layers
    log = _lmms_eval(
        [
            "--model",
            "hidden_states",
            "--model_args",
            f"pretrained={ckpt}",
            "--batch_size",
            "8",
            "--tasks",
            "probe_shapes_*",
            "--limit",
            # >= 20 probe-test docs, >= 5 per class on each side: the protocol's minimum evidence.
            "72",
            "--output_path",
            "out",
        ],
        cwd=tmp_path,
    )
    results = _results(tmp_path / "out", log)
    for task, metric in (("probe_shapes_entailment", "acc"), ("probe_shapes_objects", "map")):
        rows = _layer_rows(results[task], metric)
        assert sorted(rows) == [f"{metric}_l{i:02d}" for i in range(n_layers + 1)], log[-3000:]
        assert all(0.0 <= v <= 1.0 for v in rows.values())
    report = json.loads(next((tmp_path / "out" / "probes").glob("*/probe_shapes_entailment.json")).read_text())
    assert report["config"]["extraction"]["stack"]  # which stack was probed is recorded


def test_kill_minus_9_then_resume_computes_only_the_missing_docs(tiny_llava, tmp_path):
    import re
    import signal
    import time

    args = [
        "--model",
        "hidden_states",
        "--model_args",
        f"pretrained={tiny_llava}",
        "--batch_size",
        "1",
        "--tasks",
        "probe_shapes_entailment",
        "--limit",
        "150",
    ]
    cache = tmp_path / "cache"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LMMS_PROBE_FEATURE_CACHE": str(cache)}
    env.pop("PYTHONPATH", None)
    victim = subprocess.Popen(
        [_exe("lmms-eval"), *args, "--output_path", "killed"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while victim.poll() is None and time.monotonic() < deadline and len(list(cache.rglob("*.npy"))) < 20:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done = len(list(cache.rglob("*.npy")))
    assert victim.returncode == -signal.SIGKILL and 20 <= done < 150, f"not killed mid-extraction ({done} docs)"

    resumed = _lmms_eval(
        args + ["--output_path", "resumed"], cwd=tmp_path, env={"LMMS_PROBE_FEATURE_CACHE": str(cache)}
    )
    counts = re.search(r"150 probe docs on this rank: (\d+) from the feature cache, (\d+) computed", resumed)
    assert counts, resumed[-3000:]
    assert int(counts.group(1)) >= done and int(counts.group(1)) + int(counts.group(2)) == 150
    uncached = [a if not a.startswith("pretrained=") else f"{a},feature_cache=none" for a in args]
    fresh = _lmms_eval(uncached + ["--output_path", "fresh"], cwd=tmp_path)
    resumed_rows = _layer_rows(_results(tmp_path / "resumed", resumed)["probe_shapes_entailment"], "acc")
    fresh_rows = _layer_rows(_results(tmp_path / "fresh", fresh)["probe_shapes_entailment"], "acc")
    assert resumed_rows and resumed_rows == fresh_rows
