"""The trained tiny LLaVA: deterministic, trained on scenes disjoint from the probe docs, loadable from its folder."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from lmms_probe_tasks import TASK_DIR
from lmms_probe_tasks.data import shapes
from lmms_probe_tasks.tiny import LLAVA_IMAGE_TOKEN, llava, trained, trained_data, training
from lmms_probe_tasks.tiny.templates import LLAVA_CHAT_TEMPLATE

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHAPES_YAMLS = sorted(TASK_DIR.glob("probe_shapes_*.yaml"))
#: A recipe small enough to train in a second: what determinism needs, not what learning needs.
SMALL = dataclasses.replace(trained.RECIPE, n_entailment_scenes=8, n_object_scenes=8)


@pytest.fixture(scope="module")
def processor():
    return llava.llava(0).processor


def _task_build(path: Path) -> tuple[Callable[..., object], dict]:
    """A task YAML's document builder and the arguments it is called with (its defaults + the YAML's keys)."""
    kwargs = dict(yaml.safe_load(path.read_text())["dataset_kwargs"])
    module, name = kwargs.pop("builder").rsplit(".", 1)
    builder = getattr(importlib.import_module(module), name)
    parameters = inspect.signature(builder).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    return builder, {**defaults, **kwargs}


def _stream_keys(monkeypatch: pytest.MonkeyPatch, build: Callable[[], object]) -> tuple[set, list[tuple[int, ...]]]:
    """Run ``build``, recording every seeded numpy stream it opens: (their states, their entropies)."""
    states: set[tuple[int, ...]] = set()
    entropies: list[tuple[int, ...]] = []
    real = np.random.default_rng

    def recording(seed=None):
        if seed is None or isinstance(seed, np.random.BitGenerator | np.random.Generator):
            raise AssertionError(f"unseeded or pre-built stream {seed!r}: cannot check it is disjoint")
        sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        # The generated state identifies the stream itself, whatever the spelling of its seed.
        states.add(tuple(int(x) for x in sequence.generate_state(8)))
        entropies.append(tuple(np.atleast_1d(sequence.entropy).tolist()))
        return real(sequence)

    with monkeypatch.context() as patch:
        patch.setattr(np.random, "default_rng", recording)
        build()
    return states, entropies


def test_probe_yaml_seeds_are_below_the_training_range() -> None:
    assert len(SHAPES_YAMLS) >= 2
    for path in SHAPES_YAMLS:
        seed = _task_build(path)[1]["seed"]
        assert 0 <= seed < trained_data.TRAIN_SEED_BASE, path.name


@pytest.mark.parametrize("model_seed", [0, 1])
def test_training_streams_never_coincide_with_probe_doc_streams(
    monkeypatch: pytest.MonkeyPatch, processor, model_seed: int
) -> None:
    probe_states: set = set()
    for path in SHAPES_YAMLS:
        builder, kwargs = _task_build(path)
        states, entropies = _stream_keys(monkeypatch, lambda b=builder, k=kwargs: b(**k))
        assert entropies and all(e[0] < trained_data.TRAIN_SEED_BASE for e in entropies)
        probe_states |= states
    recipe = trained.RECIPE
    train_states, entropies = _stream_keys(
        monkeypatch,
        lambda: trained_data.build_training_set(
            processor,
            model_seed,
            recipe.n_entailment_scenes,
            recipe.n_object_scenes,
            trained.image_tokens(recipe),
        ),
    )
    assert entropies and all(e[0] >= trained_data.TRAIN_SEED_BASE for e in entropies)
    assert not probe_states & train_states


def test_training_scenes_never_equal_probe_scenes() -> None:
    records, objects = trained_data.training_scenes(
        0, trained.RECIPE.n_entailment_scenes, trained.RECIPE.n_object_scenes
    )
    training = {r.scene.shapes for r in records} | {s.shapes for s in objects}
    kwargs = {name: _task_build(TASK_DIR / f"probe_shapes_{name}.yaml")[1] for name in ("entailment", "objects")}
    sizes = {name: {k: kw[k] for k in ("n_train", "n_test", "seed")} for name, kw in kwargs.items()}
    probe = {r.scene.shapes for r in shapes.entailment_records(**sizes["entailment"])}
    probe |= {r.scene.shapes for r in shapes.object_records(**sizes["objects"])}
    assert len(training) > 1000 and len(probe) > 300
    assert not training & probe


def test_builder_seed_range_is_checked() -> None:
    assert trained_data.builder_seed(0) == trained_data.TRAIN_SEED_BASE
    for bad in (-1, trained_data.MAX_TRAIN_SEED + 1, 1.5, True):
        with pytest.raises(ValueError, match="seed must be an int"):
            trained_data.builder_seed(bad)


def test_training_prompts_are_the_probe_tasks_prompts() -> None:
    def prompt(name: str) -> str:
        return yaml.safe_load((TASK_DIR / f"probe_shapes_{name}.yaml").read_text())["lmms_eval_specific_kwargs"][
            "default"
        ]["prompt"]

    assert prompt("entailment") == trained_data.ENTAILMENT_PROMPT
    assert prompt("objects") == trained_data.CAPTION_PROMPT


def test_training_examples_are_well_formed(processor) -> None:
    data = trained_data.build_training_set(processor, 0, 4, 4, trained.image_tokens(trained.RECIPE))
    image_id = processor.tokenizer.convert_tokens_to_ids(LLAVA_IMAGE_TOKEN)
    assert len(data.pixel_values) == 8 and len(data.input_ids) == 4 * 7 + 4 * 4
    assert sorted(set(data.group.tolist())) == [trained_data.STATEMENT, trained_data.CAPTION, trained_data.QUESTION]
    for ids, n_prompt in zip(data.input_ids, data.prompt_lengths, strict=True):
        assert int((ids[:n_prompt] == image_id).sum()) == trained.image_tokens(trained.RECIPE) == 9
        assert ids[-1] == processor.tokenizer.eos_token_id and len(ids) > n_prompt + 1
    # Each entailment label has its own first answer token.
    firsts = {
        processor.tokenizer(" " + a, add_special_tokens=False).input_ids[0] for a in trained_data.ANSWERS.values()
    }
    assert len(firsts) == 3


def test_with_steps_cuts_every_stage() -> None:
    quick = trained.with_steps(trained.RECIPE, 2)
    assert quick.vision_steps == 2 and all(phase.steps == 2 for phase in quick.phases)
    assert trained.with_steps(trained.RECIPE, None) is trained.RECIPE
    with pytest.raises(ValueError, match="steps must be an int >= 0"):
        trained.with_steps(trained.RECIPE, -1)


def test_same_seed_same_weights_bit_for_bit() -> None:
    first = trained.trained_llava(0, steps=3, recipe=SMALL).model.state_dict()
    again = trained.trained_llava(0, steps=3, recipe=SMALL).model.state_dict()
    other = trained.trained_llava(1, steps=3, recipe=SMALL).model.state_dict()
    untrained = trained.trained_llava(0, steps=0, recipe=SMALL).model.state_dict()
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
    assert not all(torch.equal(first[k], untrained[k]) for k in first)


def test_cli_trained_writes_a_loadable_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "trained-llava"
    cmd = [sys.executable, "-m", "lmms_probe_tasks.tiny", "llava", str(out), "--trained", "--steps", "2"]
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(out)

    model = transformers.AutoModelForImageTextToText.from_pretrained(out).eval()
    processor = transformers.AutoProcessor.from_pretrained(out)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert type(processor).__name__ == "LlavaProcessor"
    recipe = trained.RECIPE
    text = model.config.text_config
    assert (text.hidden_size, text.num_hidden_layers) == (recipe.text_hidden_size, recipe.text_num_layers)
    # Same tokenizer and chat template as the random tiny LLaVA.
    random_tokenizer = llava.llava(0).processor.tokenizer
    assert processor.tokenizer.get_vocab() == random_tokenizer.get_vocab()
    assert processor.chat_template == LLAVA_CHAT_TEMPLATE

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is there a circle?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    image = shapes.object_records(6, 1, 0)[0].scene.render(64)
    batch = processor(images=[image], text=[prompt], return_tensors="pt")
    assert int((batch["input_ids"] == model.config.image_token_id).sum()) == trained.image_tokens(recipe)
    with torch.no_grad():
        out_states = model(**batch, output_hidden_states=True).hidden_states
    assert len(out_states) == recipe.text_num_layers + 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["llava", "OUT", "--steps", "3"], "needs --trained"),
        (["qwen2_vl", "OUT", "--trained"], "no trained tiny checkpoint for 'qwen2_vl'"),
        (["llava", "OUT", "--trained", "--steps", "-1"], "a count >= 0"),
    ],
)
def test_cli_refuses_bad_trained_arguments(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lmms_probe_tasks.tiny import main

    argv = [str(tmp_path / a) if a == "OUT" else a for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "OUT").exists()


@pytest.mark.slow
def test_full_recipe_learns_held_out_scenes(trained_llava_dir: Path) -> None:
    """The full recipe's checkpoint, loaded from its folder, answers scenes it never saw far above chance."""
    # The session's trained folder (conftest), shared with the CLI test: the ~2.5 min training runs once.
    model = transformers.AutoModelForImageTextToText.from_pretrained(trained_llava_dir).eval()
    loaded = transformers.AutoProcessor.from_pretrained(trained_llava_dir)
    tokenizer = loaded.tokenizer
    # Another training-range seed: fresh scenes, still disjoint from every probe document.
    held_out = trained_data.build_training_set(loaded, 12345, 60, 60, trained.image_tokens(trained.RECIPE))
    rows = list(range(len(held_out.input_ids)))
    inputs, targets, _ = training.make_batch(held_out, rows, tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(**inputs).logits
    first = torch.tensor([n - 1 for n in held_out.prompt_lengths])
    predicted = logits[torch.arange(len(rows)), first].argmax(-1)
    correct = predicted == targets[torch.arange(len(rows)), first]
    accuracy = {g: float(correct[held_out.group == g].float().mean()) for g in range(3)}
    assert accuracy[trained_data.STATEMENT] > 0.55  # chance: 1/3
    assert accuracy[trained_data.QUESTION] > 0.8
