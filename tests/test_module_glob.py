"""Module globs (``modules=``): glob semantics, parsing, matching order and errors, and the listing CLI.

The CLI and :func:`meta_model` run on a tiny LLaVA whose weight files were deleted,
so any weight read fails the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmms_probe_tasks.extract.module_glob import (
    N_CLOSEST,
    closest_names,
    glob_regex,
    match_modules,
    meta_model,
    module_names,
    parse_modules_arg,
)
from lmms_probe_tasks.modules import main

# A small named_modules() list, in the order a decoder-only model gives it.
NAMES = [
    "",
    "model",
    "model.embed_tokens",
    "model.layers",
    "model.layers.0",
    "model.layers.0.self_attn",
    "model.layers.0.self_attn.q_proj",
    "model.layers.0.self_attn.o_proj",
    "model.layers.0.mlp",
    "model.layers.1",
    "model.layers.1.self_attn",
    "model.layers.1.self_attn.q_proj",
    "model.layers.1.self_attn.o_proj",
    "model.layers.1.mlp",
    "model.norm",
    "lm_head",
]

GLOB_TABLE = [
    # '*' is exactly one component
    ("model.layers.*.mlp", "model.layers.0.mlp", True),
    ("model.layers.*.mlp", "model.layers.12.mlp", True),
    ("model.layers.*.mlp", "model.layers.0.1.mlp", False),
    ("model.layers.*.mlp", "model.layers.mlp", False),
    ("model.*", "model.layers", True),
    ("model.*", "model.layers.0", False),
    ("*", "model", True),
    ("*", "model.layers", False),
    # '*' inside a component: any non-dot run, empty included
    ("model.layers.0.self_attn.*_proj", "model.layers.0.self_attn.q_proj", True),
    ("model.layers.0.self_attn.*_proj", "model.layers.0.self_attn._proj", True),
    ("model.layers.0.self_attn.*_proj", "model.layers.0.self_attn.x.q_proj", False),
    ("model.lay*", "model.layers", True),
    # '**' is any number of components, none included
    ("model.**.mlp", "model.mlp", True),
    ("model.**.mlp", "model.a.mlp", True),
    ("model.**.mlp", "model.a.b.mlp", True),
    ("model.**.mlp", "model.mlp_x", False),
    ("model.**.mlp", "other.a.mlp", False),
    ("**.mlp", "mlp", True),
    ("**.mlp", "model.layers.0.mlp", True),
    ("**.mlp", "model.layers.0.mlp.fc1", False),
    ("model.**", "model", True),
    ("model.**", "model.layers.0.mlp", True),
    ("model.**", "modelx", False),
    ("**", "model.layers.0", True),
    ("model.**.**.mlp", "model.mlp", True),
    ("**.layers.*", "model.layers.0", True),
    # '?' is one non-dot character
    ("model.layers.?.mlp", "model.layers.0.mlp", True),
    ("model.layers.?.mlp", "model.layers.10.mlp", False),
    ("model.layers.??.mlp", "model.layers.10.mlp", True),
    ("model?layers", "model.layers", False),
    # dots and everything else are literal
    ("model.layers", "modelXlayers", False),
    ("model.layers.0", "model.layers.0", True),
    ("a+b.[0]", "a+b.[0]", True),
    ("a+b.[0]", "aab.0", False),
    # anchored: the whole name, from the root
    ("layers.*", "model.layers.0", False),
    ("layers.*.mlp", "model.layers.0.mlp", False),
    ("model.layers", "model.layers.0", False),
    ("layers.0", "model.layers.0", False),
    ("*.layers.*.mlp", "model.language_model.layers.0.mlp", False),
]


@pytest.mark.parametrize(("pattern", "name", "expected"), GLOB_TABLE)
def test_glob_semantics(pattern: str, name: str, expected: bool) -> None:
    rx = glob_regex(pattern)
    assert bool(rx.fullmatch(name)) is expected
    # Anchoring lives in the regex itself, so every re method agrees with fullmatch.
    assert bool(rx.match(name)) is expected
    assert bool(rx.search(name)) is expected


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("model..mlp", "empty component"),
        (".model", "empty component"),
        ("model.", "empty component"),
        ("model.la**", "whole component"),
        ("***", "whole component"),
        (["model"], "not a string"),
    ],
)
def test_malformed_globs_name_the_glob_and_the_fix(pattern: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as err:
        glob_regex(pattern)
    assert repr(pattern) in str(err.value)


def test_match_keeps_named_modules_order_not_pattern_order() -> None:
    got = match_modules(NAMES, ["model.layers.*.mlp", "model.embed_tokens", "lm_head"])
    assert got == ["model.embed_tokens", "model.layers.0.mlp", "model.layers.1.mlp", "lm_head"]


def test_match_dedupes_across_patterns_and_skips_the_root() -> None:
    got = match_modules(NAMES + ["model.norm"], ["model.layers.0.**", "**.mlp", "model.layers.?.mlp", "**"])
    assert got == NAMES[1:]  # every name once, in order, without the root ""
    assert match_modules(NAMES, ["model.layers.0.**", "**.mlp"]) == [
        "model.layers.0",
        "model.layers.0.self_attn",
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.o_proj",
        "model.layers.0.mlp",
        "model.layers.1.mlp",
    ]


def test_match_accepts_a_lone_string_and_rejects_no_patterns() -> None:
    assert match_modules(NAMES, "model.norm") == ["model.norm"]
    with pytest.raises(ValueError, match="no module glob given"):
        match_modules(NAMES, [])


def test_no_match_lists_the_closest_names_and_the_listing_command() -> None:
    names = [""] + [f"model.language_model.layers.{i}{s}" for i in range(12) for s in ("", ".mlp", ".mlp.fc1")]
    with pytest.raises(ValueError) as err:
        match_modules(names, ["model.language_model.layers.*.mlp", "model.language_model.layer.*.mlp"])
    msg = str(err.value)
    assert "'model.language_model.layer.*.mlp' matches none" in msg
    assert "'model.language_model.layers.*.mlp' matches none" not in msg  # the good glob is not blamed
    close = closest_names("model.language_model.layer.*.mlp", names)
    assert len(close) == N_CLOSEST
    assert close[:3] == [f"model.language_model.layers.{i}.mlp" for i in range(3)]
    assert ", ".join(close) in msg
    assert "python -m lmms_probe_tasks.modules PRETRAINED 'GLOB'" in msg
    assert "'**' = any number" in msg  # the syntax reminder


def test_no_match_names_every_failing_glob() -> None:
    with pytest.raises(ValueError) as err:
        match_modules(NAMES, ["model.norm", "model.nrom", "lm_haed"])
    msg = str(err.value)
    assert "'model.nrom' matches none" in msg and "'lm_haed' matches none" in msg
    assert "closest names: model.norm" in msg and "lm_head" in msg


def test_no_match_points_out_the_anchoring() -> None:
    with pytest.raises(ValueError, match=r"did you mean '\*\*\.layers\.\*\.mlp'") as err:
        match_modules(NAMES, ["layers.*.mlp"])
    assert "model.layers.0.mlp, model.layers.1.mlp" in str(err.value)


def test_no_match_with_nothing_close_shows_the_top_level() -> None:
    with pytest.raises(ValueError, match="top-level modules are: model, lm_head"):
        match_modules(NAMES, ["zzz.qqq"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("model.language_model.layers.*.mlp", ("model.language_model.layers.*.mlp",)),
        ("  model.norm ", ("model.norm",)),
        ("[model.layers.*.mlp,lm_head]", ("model.layers.*.mlp", "lm_head")),
        ("[model.layers.*.mlp, lm_head]", ("model.layers.*.mlp", "lm_head")),
        ("[model.norm]", ("model.norm",)),
        ("model.layers.*.mlp;lm_head", ("model.layers.*.mlp", "lm_head")),
        ('"model.norm"', ("model.norm",)),
        ("['model.norm','lm_head']", ("model.norm", "lm_head")),
        ("[lm_head,model.norm,lm_head]", ("lm_head", "model.norm")),
        (["model.norm", "lm_head"], ("model.norm", "lm_head")),
        (("model.norm",), ("model.norm",)),
    ],
)
def test_parse_single_and_list_values(value: object, expected: tuple[str, ...]) -> None:
    assert parse_modules_arg(value) == expected


def test_parse_what_lmms_eval_hands_over() -> None:
    from lmms_eval.utils import simple_parse_args_string

    args = simple_parse_args_string("pretrained=x,modules=[model.layers.*.mlp,**.o_proj],layers=[0,8]")
    assert parse_modules_arg(args["modules"]) == ("model.layers.*.mlp", "**.o_proj")
    args = simple_parse_args_string("pretrained=x,modules=model.layers.*.mlp")
    assert parse_modules_arg(args["modules"]) == ("model.layers.*.mlp",)


@pytest.mark.parametrize(
    ("value", "says", "fix"),
    [
        ("", "names no module", "modules=[GLOB1,GLOB2]"),
        ("[]", "names no module", "modules=[GLOB1,GLOB2]"),
        ("[ , ]", "names no module", "modules=[GLOB1,GLOB2]"),
        ([], "names no module", "modules=[GLOB1,GLOB2]"),
        (True, "not a module glob", "modules=model.language_model.layers.*.mlp"),
        (8, "not a module glob", "modules=model.language_model.layers.*.mlp"),
        (["model.norm", 3], "not a glob string", "modules=model.language_model.layers.*.mlp"),
        ("[model.norm", "unbalanced brackets", "--model_args 'pretrained=...,modules=[GLOB1,GLOB2]'"),
        ("[model..norm]", "empty component", "remove the extra dot"),
    ],
)
def test_parse_rejects_bad_values_with_the_fix(value: object, says: str, fix: str) -> None:
    with pytest.raises(ValueError, match=says) as err:
        parse_modules_arg(value)
    assert fix in str(err.value)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny LLaVA (with weights) and a copy whose weight files are gone."""
    from lmms_probe_tasks.tiny import build_tiny

    full = build_tiny("llava", tmp_path_factory.mktemp("ckpt") / "tiny-llava")
    bare = tmp_path_factory.mktemp("ckpt") / "tiny-llava-no-weights"
    shutil.copytree(full, bare)
    weights = [p for p in bare.iterdir() if p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json")]
    assert weights, "the tiny checkpoint should have a weight file to delete"
    for path in weights:
        path.unlink()
    return full, bare


def test_meta_model_has_the_loaded_models_names_and_no_weights(checkpoints: tuple[Path, Path]) -> None:
    from transformers import AutoModelForImageTextToText

    full, bare = checkpoints
    skeleton = meta_model(str(bare))  # would raise OSError if it tried to read weights
    assert all(p.device.type == "meta" for p in skeleton.parameters())
    loaded = AutoModelForImageTextToText.from_pretrained(full)
    expected = [(n, type(m).__name__) for n, m in loaded.named_modules() if n]
    assert module_names(str(bare)) == expected


def test_cli_lists_the_decoder_mlps_without_weights(
    checkpoints: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import AutoConfig

    _, bare = checkpoints
    n_layers = AutoConfig.from_pretrained(bare).text_config.num_hidden_layers
    assert main([str(bare), "model.language_model.layers.*.mlp"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split() for line in lines[:-1]] == [
        [f"model.language_model.layers.{i}.mlp", "LlamaMLP"] for i in range(n_layers)
    ]
    assert lines[-1].startswith(f"{n_layers} of ") and "LlavaForConditionalGeneration" in lines[-1]


def test_cli_any_depth_glob_and_full_listing(
    checkpoints: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, bare = checkpoints
    assert main([str(bare), "**.layers.*.mlp", "--revision", "main"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[:-1]]
    assert names[0].startswith("model.vision_tower.") and names[-1].startswith("model.language_model.")
    assert all(n.endswith(".mlp") for n in names)
    assert main([str(bare)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == [n for n, _ in module_names(str(bare))]
    assert lines[-1] == f"{len(lines) - 1} modules in LlavaForConditionalGeneration"


def test_cli_no_match_exits_2_with_the_closest_names(
    checkpoints: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, bare = checkpoints
    assert main([str(bare), "*.layers.*.mlp"]) == 2  # anchored: 'model.language_model' is two components
    out, err = capsys.readouterr()
    assert out == ""
    assert "did you mean '**.*.layers.*.mlp'" in err and "model.language_model.layers.0.mlp" in err
    assert main([str(bare), "[model.language_model.layer.*.mlp]"]) == 2
    assert "closest names: model.language_model.layers.0.mlp" in capsys.readouterr().err
    assert main([str(bare / "missing")]) == 2
    assert "no such checkpoint folder" in capsys.readouterr().err


def test_cli_as_a_module_exits_2_on_no_match(checkpoints: tuple[Path, Path]) -> None:
    _, bare = checkpoints
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "lmms_probe_tasks.modules", str(bare), "model.language_model.layer.*.mlp"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "closest names: model.language_model.layers.0.mlp" in proc.stderr
    assert "python -m lmms_probe_tasks.modules PRETRAINED 'GLOB'" in proc.stderr
