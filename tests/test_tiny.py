"""Tiny random checkpoints: build offline, load with the Auto classes, run a batched forward."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmms_probe_tasks import tiny
from lmms_probe_tasks.extract import families
from tests.family_facts import FACTS

REPO_ROOT = Path(__file__).resolve().parent.parent

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")
Image = pytest.importorskip("PIL.Image")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Any attempt to reach the hub must fail loudly instead of hanging or downloading.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One checkpoint per architecture, seed 0, shared by the tests of this module."""
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # module-scoped: monkeypatch is function-scoped
    try:
        return {
            arch: tiny.build_tiny(arch, tmp_path_factory.mktemp(arch))
            for arch in tiny.BUILDERS
            if not tiny.missing_requirements(arch)
        }
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def _path(built: dict[str, Path], arch: str) -> Path:
    if arch not in built:
        pytest.skip(f"{arch} needs {', '.join(tiny.missing_requirements(arch))}")
    return built[arch]


def _load(path: Path):
    model = transformers.AutoModelForImageTextToText.from_pretrained(path)
    processor = transformers.AutoProcessor.from_pretrained(path)
    return model.eval(), processor


def _messages(text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def _state_dict(path: Path) -> dict:
    return safetensors_torch.load_file(str(path / "model.safetensors"))


def test_builders_cover_required_archs() -> None:
    assert "llava" in tiny.BUILDERS
    assert all(callable(builder) for builder in tiny.BUILDERS.values())


@pytest.mark.parametrize("arch", sorted(tiny.BUILDERS))
def test_loads_and_batched_forward_returns_every_layer(built: dict[str, Path], arch: str) -> None:
    model, processor = _load(_path(built, arch))
    assert model.dtype == torch.float32
    # Prompt layout, image nesting, extra inputs and where the language states are:
    # per family (lmms_probe_tasks.families).
    family = families.lookup(model.config)
    prompts = [
        families.build_prompt(processor, family, "Is there a cat?"),
        families.build_prompt(processor, family, "Describe the red square on the left, please."),
    ]
    images = [[Image.new("RGB", (64, 48), (255, 0, 0))], [Image.new("RGB", (20, 40), (0, 0, 255))]]
    batch = processor(images=families.processor_images(family, images), text=prompts, padding=True, return_tensors="pt")
    # Different prompt lengths: padding must actually happen for the test to mean something.
    assert int(batch["attention_mask"].sum(dim=1).min()) < batch["attention_mask"].shape[1]
    with torch.no_grad():
        out = model(**families.forward_kwargs(model, family, batch), output_hidden_states=True)
    states = families.language_hidden_states(out, family)
    text_config = model.config.get_text_config()
    assert len(states) == text_config.num_hidden_layers + 1
    seq = batch["input_ids"].shape[1]
    for layer in states:
        assert tuple(layer.shape) == (2, seq, text_config.hidden_size)
        assert torch.isfinite(layer).all()
    assert out.logits.shape[-1] == text_config.vocab_size


def test_llava_sizes_and_image_token(built: dict[str, Path]) -> None:
    model, processor = _load(built["llava"])
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert type(processor).__name__ == "LlavaProcessor"
    text_config = model.config.text_config
    assert (text_config.num_hidden_layers, text_config.hidden_size) == (4, 32)
    assert model.config.vision_config.num_hidden_layers == 2
    assert processor.image_token == "<image>" == tiny.LLAVA_IMAGE_TOKEN
    assert (
        processor.tokenizer.convert_tokens_to_ids("<image>") == model.config.image_token_id == tiny.LLAVA_IMAGE_TOKEN_ID
    )
    assert len(processor.tokenizer) <= text_config.vocab_size

    prompt = processor.apply_chat_template(_messages("Is there a cat?"), add_generation_prompt=True)
    assert prompt.count("<image>") == 1
    assert prompt.startswith("USER: <image>\n") and prompt.endswith("ASSISTANT:")
    # String content is accepted as well as a list of parts.
    plain = processor.apply_chat_template([{"role": "user", "content": "Is there a cat?"}], add_generation_prompt=True)
    assert plain == "USER: Is there a cat? ASSISTANT:"

    # Every image expands to (30 / 6)^2 = 25 tokens, whatever its size.
    images = [Image.new("RGB", (64, 48)), Image.new("RGB", (13, 90))]
    batch = processor(images=images, text=[prompt, prompt], padding=True, return_tensors="pt")
    counts = (batch["input_ids"] == model.config.image_token_id).sum(dim=1).tolist()
    assert counts == [tiny.LLAVA_NUM_IMAGE_TOKENS] * 2 == [25, 25]


def test_tokenizer_covers_any_text_without_unknowns(built: dict[str, Path]) -> None:
    tokenizer = transformers.AutoProcessor.from_pretrained(built["llava"]).tokenizer
    sentences = ["Is there a cat?", "Is there a dog?", "Xylophones & zebras: 42% {odd} ~text~ \t\n", "naïve café"]
    encoded = [tokenizer(s, add_special_tokens=False)["input_ids"] for s in sentences]
    assert len({tuple(ids) for ids in encoded}) == len(sentences)
    for sentence, ids in zip(sentences, encoded, strict=True):
        assert tokenizer.unk_token_id is None or tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == sentence
    assert tokenizer.pad_token is not None and tokenizer.bos_token is not None and tokenizer.eos_token is not None
    # <image> is one special token, never split into characters.
    assert tokenizer("<image>", add_special_tokens=False)["input_ids"] == [tiny.LLAVA_IMAGE_TOKEN_ID]


@pytest.mark.parametrize("arch", sorted(tiny.BUILDERS))
def test_same_seed_identical_weights_other_seed_differs(built: dict[str, Path], tmp_path: Path, arch: str) -> None:
    _path(built, arch)
    again = tiny.build_tiny(arch, tmp_path / "again", seed=0)
    other = tiny.build_tiny(arch, tmp_path / "other", seed=1)
    reference, same, different = _state_dict(built[arch]), _state_dict(again), _state_dict(other)
    assert reference.keys() == same.keys() == different.keys()
    assert all(torch.equal(reference[k], same[k]) for k in reference)
    assert not all(torch.equal(reference[k], different[k]) for k in reference)
    # The tokenizer (trained in memory) is deterministic too.
    assert (built[arch] / "tokenizer.json").read_bytes() == (again / "tokenizer.json").read_bytes()


@pytest.mark.parametrize("arch", sorted(tiny.BUILDERS))
def test_chat_template_has_one_image_token_matching_config(built: dict[str, Path], arch: str) -> None:
    model, processor = _load(_path(built, arch))
    family = FACTS[families.family_key(model.config)]  # the test-only facts (tests/family_facts.py)
    if not family.has_chat_template:
        # PaliGemma, Kosmos-2, InstructBLIP: the real checkpoints have none either.
        assert not getattr(processor, "chat_template", None)
        return
    if not family.processor_image_token:
        pytest.skip(f"{arch}: processor.image_token is not the config's image token (see family_facts)")
    image_token_id = model.config.image_token_id
    assert processor.tokenizer.convert_tokens_to_ids(processor.image_token) == image_token_id
    assert processor.tokenizer(processor.image_token, add_special_tokens=False)["input_ids"] == [image_token_id]
    prompt = processor.apply_chat_template(_messages("Is there a cat?"), add_generation_prompt=True)
    assert prompt.count(processor.image_token) == 1
    assert "Is there a cat?" in prompt
    assert len(processor.tokenizer) <= model.config.get_text_config().vocab_size


def test_build_does_not_touch_global_rng(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny.build_tiny("llava", tmp_path / "ckpt", seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_checkpoint_matches_plain_config_construction(built: dict[str, Path]) -> None:
    """The saved weights are exactly what plain `LlavaForConditionalGeneration(config)` gives under the seed."""
    config = transformers.AutoConfig.from_pretrained(built["llava"])
    assert isinstance(config, transformers.LlavaConfig)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.LlavaForConditionalGeneration(config)
    # Compare through from_pretrained: the file may store legacy key names, which
    # transformers maps back onto the module tree when loading.
    loaded = transformers.AutoModelForImageTextToText.from_pretrained(built["llava"]).state_dict()
    state = model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_unknown_arch_raises_with_valid_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        tiny.build_tiny("llama-9000", tmp_path)
    message = str(info.value)
    assert "llama-9000" in message
    for name in tiny.BUILDERS:
        assert name in message
    assert not any(tmp_path.iterdir())  # nothing written


def test_cli_main_builds_and_prints_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert tiny.main(["llava", str(out), "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lmms_probe_tasks.tiny", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_help_says_weights_are_random_and_lists_archs() -> None:
    result = _run_cli("--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split()).lower()
    assert "random" in text and "weights" in text
    assert "not for meaningful scores" in text
    for name in tiny.BUILDERS:
        assert name in text


def test_cli_unknown_arch_is_a_usage_error(tmp_path: Path) -> None:
    result = _run_cli("nope", str(tmp_path / "x"))
    assert result.returncode == 2
    assert "'nope'" in result.stderr and "llava" in result.stderr
    assert not (tmp_path / "x").exists()
