"""The per-family facts (runtime table + tests/family_facts.py), checked on a tiny checkpoint of every builder.

Each checkpoint is built once per session, loaded with the Auto classes (offline),
prompted the way the table says (chat template, or the documented plain layout), and
run on documents of different lengths so that padding happens.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from lmms_probe_tasks import tiny
from lmms_probe_tasks.extract import families
from lmms_probe_tasks.extract.prefix_plan import plan_prefix_batches
from lmms_probe_tasks.extract.shared_prefix import doc_tokens, extract_prefix_batch, right_padding, truncate_inputs
from lmms_probe_tasks.extract.taps import Taps
from tests.family_facts import BATCH_TOLERANCE, FACTS, FamilyFacts

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
Image = pytest.importorskip("PIL.Image")
np = pytest.importorskip("numpy")
extract = pytest.importorskip("lmms_probe_tasks.extract")

ARCHS = sorted(tiny.BUILDERS)
#: Builder name -> the family entry it makes.
FACTS_BY_ARCH = {arch: key for key, facts in FACTS.items() for arch in facts.tiny}
TEXTS = (
    "Is there a cat?",
    "Describe the red square on the left of the picture, please, in some detail.",
    "Dog?",
    "What colour is the car next to the big tree near the station?",
)
SIZES = ((64, 48), (20, 40), (33, 33), (90, 30))


def _noise(size: tuple[int, int], seed: int) -> Any:
    """A random-noise RGB image: every patch differs, so image features do too."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


IMAGES = tuple(_noise(size, seed) for seed, size in enumerate(SIZES))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(
    processor: Any, family: families.Family, docs: list[int], images: list | None = None, side: str = "right"
) -> Any:
    """Processor output for documents ``docs`` (text and image i), or the given image per row."""
    processor.tokenizer.padding_side = side
    try:
        prompts = [families.build_prompt(processor, family, TEXTS[i]) for i in docs]
        per_doc = [[image] for image in (images or [IMAGES[i] for i in docs])]
        return processor(
            images=families.processor_images(family, per_doc), text=prompts, padding=True, return_tensors="pt"
        )
    finally:
        processor.tokenizer.padding_side = "right"


def _forward(model: Any, family: families.Family, batch: Any) -> tuple[Any, tuple]:
    with torch.inference_mode():
        out = model(**families.forward_kwargs(model, family, batch), output_hidden_states=True)
    return out, families.language_hidden_states(out, family)


def _pooled(states: tuple, attention_mask: Any, pooling: str) -> Any:
    """``[batch, layers, hidden]`` float32 via the extractor's own pooling."""
    weights = extract.pooling_weights(attention_mask, pooling)
    return torch.stack([extract.pool(layer, weights) for layer in states], dim=1)


# -- the table itself -------------------------------------------------------------


def _facts(config: Any) -> FamilyFacts:
    return FACTS[families.family_key(config)]


def test_test_facts_cover_exactly_the_runtime_table() -> None:
    assert set(FACTS) == set(families.FAMILIES)


def test_every_builder_has_exactly_one_family_entry() -> None:
    owners: dict[str, list[str]] = {arch: [] for arch in tiny.BUILDERS}
    for key, facts in FACTS.items():
        for arch in facts.tiny:
            assert arch in tiny.BUILDERS, f"families[{key!r}] names unknown builder {arch!r}"
            owners[arch].append(key)
    assert {arch: keys for arch, keys in owners.items() if len(keys) != 1} == {}


def test_table_values_are_valid() -> None:
    for key, family in families.FAMILIES.items():
        assert family.image_positions in ("image_token_id", "image_embeds_position_mask", "cross_attention"), key
        assert family.prompt in ("chat_template", "text", "image_tokens_then_text"), key
        assert FACTS[key].has_chat_template == (family.prompt == "chat_template"), key
        assert FACTS[key].batch_invariant, key  # every family verified so far


def test_unknown_family_gets_defaults_with_a_warning_note() -> None:
    config = transformers.PretrainedConfig()
    config.model_type = "not_a_family"
    family = families.lookup(config)
    assert family.hidden_states == "hidden_states" and "not in" in family.notes


@pytest.mark.parametrize("arch", ARCHS)
def test_built_config_maps_to_the_entry_naming_the_builder(checkpoint: Any, arch: str) -> None:
    model, processor, _ = checkpoint(arch)
    assert arch in _facts(model.config).tiny
    assert families.family_key(model.config) in families.FAMILIES
    # Real checkpoints of the family ship a chat template exactly when the facts say so.
    assert bool(getattr(processor, "chat_template", None)) == _facts(model.config).has_chat_template


@pytest.mark.parametrize("arch", ARCHS)
def test_processor_and_forward_quirks_are_as_the_table_says(checkpoint: Any, arch: str) -> None:
    model, processor, family = checkpoint(arch)
    prompts = [families.build_prompt(processor, family, text) for text in TEXTS[:2]]
    if family.prompt != "chat_template":
        image_token = str(getattr(processor, "image_token", None) or "<image>")
        assert sum(prompt.count(image_token) for prompt in prompts) == (
            2 if family.prompt == "image_tokens_then_text" else 0
        )
    # nested_images: a flat list means "all images of one prompt" to these processors.
    flat = [IMAGES[0], IMAGES[1]]
    if family.nested_images:
        with pytest.raises(ValueError, match="number of"):
            processor(images=flat, text=prompts, padding=True, return_tensors="pt")
    else:
        processor(images=flat, text=prompts, padding=True, return_tensors="pt")
    batch = _batch(processor, family, [0, 1])
    for name in family.drop_inputs:
        assert name in batch  # the processor really returns it
    if family.decoder_input_ids:
        with pytest.raises(ValueError), torch.inference_mode():
            model(**batch)


# -- (a) where the hidden states are, (c) image positions, (f) logits_to_keep -----


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_returns_every_layer_where_the_table_says(checkpoint: Any, arch: str) -> None:
    model, processor, family = checkpoint(arch)
    batch = _batch(processor, family, [0, 1])
    assert int(batch["attention_mask"].sum(dim=1).min()) < batch["attention_mask"].shape[1], "no padding happened"
    out, states = _forward(model, family, batch)

    text_config = model.config.get_text_config()
    assert len(states) == text_config.num_hidden_layers + 1
    for layer in states:
        assert tuple(layer.shape) == (2, batch["input_ids"].shape[1], text_config.hidden_size)
        assert torch.isfinite(layer).all()
    if family.hidden_states != "hidden_states":
        assert getattr(out, "hidden_states", None) is None  # really not at the top level

    # (f) logits_to_keep: a named forward parameter exactly where the table says; it works.
    assert ("logits_to_keep" in inspect.signature(model.forward).parameters) == family.logits_to_keep
    if family.logits_to_keep:
        assert out.logits.shape[:2] == (2, 1)


@pytest.mark.parametrize("arch", ARCHS)
def test_image_positions_hold_the_image_features(checkpoint: Any, arch: str) -> None:
    """Same prompt, two different images: row 0 differs exactly at the image positions."""
    model, processor, family = checkpoint(arch)
    batch = _batch(processor, family, [0, 0], images=[IMAGES[0], _noise(SIZES[0], seed=99)])
    _, states = _forward(model, family, batch)
    row0_diff = (states[0][0] - states[0][1]).abs().amax(dim=-1)

    if family.image_positions == "cross_attention":
        with pytest.raises(ValueError, match="cross-attention"):
            families.image_positions(model.config, family, batch)
        assert float(row0_diff.max()) == 0.0  # no image feature in the sequence...
        assert float((states[-1][0] - states[-1][1]).abs().max()) > 1e-4  # ...but it reaches the text
        return
    image = families.image_positions(model.config, family, batch)
    assert torch.equal(image[0], image[1])
    assert int(image[0].sum()) > 0
    # Most image positions change with the image (LLaVA-NeXT/OneVision also put a
    # learned, image-independent newline feature at the end of each row of patches)...
    assert float((row0_diff[image[0]] > 1e-4).float().mean()) > 0.5
    # ...and no other position does.
    assert float(row0_diff[~image[0]].max()) == 0.0
    if family.image_positions == "image_token_id":
        assert isinstance(model.config.image_token_id, int)
    else:
        assert getattr(model.config, "image_token_id", None) is None
    processor_token = getattr(processor, "image_token", None)
    processor_token_id = processor.tokenizer.convert_tokens_to_ids(str(processor_token)) if processor_token else None
    matches = processor_token_id is not None and processor_token_id == getattr(model.config, "image_token_id", None)
    assert matches == _facts(model.config).processor_image_token


# -- (d) batch invariance -----------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_same_features_alone_and_in_a_padded_batch(checkpoint: Any, arch: str, record_property: Any) -> None:
    model, processor, family = checkpoint(arch)
    sides = ["right", "left"]
    diffs: dict[str, float] = {}
    for side in sides:
        batch = _batch(processor, family, [0, 1, 2, 3], side=side)
        assert len(set(batch["attention_mask"].sum(dim=1).tolist())) > 1, "documents must differ in length"
        _, states = _forward(model, family, batch)
        worst = 0.0
        for row in range(4):
            single = _batch(processor, family, [row], side=side)
            _, alone = _forward(model, family, single)
            for pooling in ("last", "mean"):
                together = _pooled(states, batch["attention_mask"], pooling)[row]
                diff = (together - _pooled(alone, single["attention_mask"], pooling)[0]).abs().max()
                worst = max(worst, float(diff))
        diffs[side] = worst
    record_property("batch_max_abs_diff", diffs)
    print(f"{arch}: bs=4 vs bs=1 max abs diff {diffs}")
    assert diffs["right"] < BATCH_TOLERANCE
    if _facts(model.config).left_padding_ok:
        assert diffs["left"] < BATCH_TOLERANCE
    else:
        assert diffs["left"] > BATCH_TOLERANCE  # documented: left padding shifts the text


# -- (b)/(e) which stack, where its layers are, and hooks on them ------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_decoder_layers_and_final_norm_reproduce_hidden_states(checkpoint: Any, arch: str) -> None:
    """Hooks on the table's layer list and final norm give exactly the hidden_states rows."""
    model, processor, family = checkpoint(arch)
    text_config = model.config.get_text_config()
    layers = families.decoder_layers(model, family)
    norm = families.final_norm(model, family)
    assert isinstance(layers, torch.nn.ModuleList) and len(layers) == text_config.num_hidden_layers
    assert isinstance(norm, torch.nn.Module)
    decoder_layers_attr = getattr(model.get_decoder(), "layers", None)
    if family.decoder_layers == "get_decoder().layers":
        assert decoder_layers_attr is layers
    else:
        assert decoder_layers_attr is not layers  # the reason for the non-default entry

    captured: dict[int, Any] = {}

    def keep(index: int) -> Any:
        def hook(module: Any, args: tuple, output: Any) -> None:
            captured[index] = output[0] if isinstance(output, tuple) else output

        return hook

    def keep_input(module: Any, args: tuple, kwargs: dict) -> None:
        captured[0] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

    n = len(layers)
    handles = [layers[0].register_forward_pre_hook(keep_input, with_kwargs=True)]
    handles += [layers[i - 1].register_forward_hook(keep(i)) for i in range(1, n)]
    handles.append(norm.register_forward_hook(keep(n)))
    try:
        batch = _batch(processor, family, [0, 1])
        _, states = _forward(model, family, batch)
    finally:
        for handle in handles:
            handle.remove()
    assert sorted(captured) == list(range(n + 1))
    for index in range(n + 1):
        assert torch.equal(captured[index], states[index]), f"row {index}"


# -- (g) shared prompt prefixes ------------------------------------------------------

#: Three images with four documents each, and one image with one (which runs whole).
SHARED_DOCS = tuple((TEXTS[t], i) for i in range(3) for t in range(4)) + ((TEXTS[0], 3),)


def _right_padded(processor: Any, family: families.Family, docs: list[tuple[str, int]]) -> Any:
    """Processor output for ``(text, image index)`` documents, right-padded."""
    prompts = [families.build_prompt(processor, family, text) for text, _ in docs]
    per_doc = [[IMAGES[image]] for _, image in docs]
    with right_padding(processor.tokenizer):
        return processor(
            images=families.processor_images(family, per_doc), text=prompts, padding=True, return_tensors="pt"
        )


def _whole(model: Any, processor: Any, family: families.Family, pooling: str) -> Any:
    """Features of every document of :data:`SHARED_DOCS` run alone, as extraction without sharing gives them."""
    parts, layers = extract.find_decoder(model, family), range(model.config.get_text_config().num_hidden_layers + 1)
    out = []
    for doc in SHARED_DOCS:
        batch = _right_padded(processor, family, [doc])
        image = families.image_positions(model.config, family, batch) if pooling in ("image", "text") else None
        forward = families.forward_kwargs(model, family, batch)
        out.append(extract.extract_batch(model, forward, pooling, layers, image, parts)[0])
    return np.stack(out)


def _shared(model: Any, processor: Any, family: families.Family, pooling: str, batch_size: int) -> tuple[Any, list]:
    """Features of :data:`SHARED_DOCS` through the shared-prefix path (NaN rows: not shared), and the plan."""
    parts, layers = extract.find_decoder(model, family), range(model.config.get_text_config().num_hidden_layers + 1)
    inputs = _right_padded(processor, family, list(SHARED_DOCS))
    keys = [str(image) for _, image in SHARED_DOCS]
    tokens = dict(enumerate(doc_tokens(inputs, families.image_positions(model.config, family, inputs), keys)))
    batches, _ = plan_prefix_batches(tokens, max_groups=batch_size)
    out = np.full((len(SHARED_DOCS), len(layers), model.config.get_text_config().hidden_size), np.nan, np.float32)
    pad_id = processor.tokenizer.pad_token_id or 0
    for batch in batches:
        prefix = _right_padded(processor, family, [SHARED_DOCS[group[0]] for group in batch.groups])
        prefix = truncate_inputs(prefix, batch.length)
        taps = Taps(tuple(layers), len(parts.layers))
        for docs, feats in extract_prefix_batch(
            model, family, parts, prefix, batch, tokens, pooling, taps, batch_size, pad_id=pad_id
        ):
            out[list(docs)] = feats["language"]
    return out, batches


def _relative_diff(a: Any, b: Any) -> float:
    """Largest difference per layer, relative to that layer's largest value, over all layers."""
    return float((np.abs(a - b).max(axis=(0, 2)) / np.abs(b).max(axis=(0, 2))).max())


@pytest.mark.parametrize("arch", [a for a in ARCHS if families.FAMILIES[FACTS_BY_ARCH[a]].prefix_sharing])
def test_shared_prefixes_give_the_whole_documents_features(checkpoint: Any, arch: str, record_property: Any) -> None:
    """Where the table turns sharing on: as each document run whole (1e-3 relative), every pooling and batch size."""
    model, processor, family = checkpoint(arch)
    # The suffixes run through a module that holds the probed layers (and embeds the tokens).
    suffix_decoder = families.suffix_decoder(model, family)
    assert any(module is families.decoder_layers(model, family) for module in suffix_decoder.modules())
    worst = {}
    for pooling in extract.POOLINGS:
        whole = _whole(model, processor, family, pooling)
        for batch_size in (1, 3, 8):
            shared, batches = _shared(model, processor, family, pooling, batch_size)
            # The 12 documents of the three 4-document images share; the lone one does not.
            assert sorted(d for b in batches for d in b.docs) == list(range(12))
            assert all(len(group) == 4 for b in batches for group in b.groups)
            worst[f"{pooling}/bs{batch_size}"] = _relative_diff(shared[:12], whole[:12])
    record_property("shared_prefix_rel_diff", worst)
    print(f"{arch}: shared vs whole, largest relative difference {max(worst.values()):.1e}")
    assert max(worst.values()) < 1e-3, worst


@pytest.mark.parametrize("arch", [a for a in ARCHS if not families.FAMILIES[FACTS_BY_ARCH[a]].prefix_sharing])
def test_prefix_sharing_is_off_where_it_would_be_wrong(checkpoint: Any, arch: str) -> None:
    """Each family the table turns off fails when forced: its prefix is not a function of the prefix alone."""
    model, processor, family = checkpoint(arch)
    if family.image_positions == "cross_attention":  # Mllama: no image position to end a prefix after
        batch = _right_padded(processor, family, [SHARED_DOCS[0]])
        with pytest.raises(ValueError, match="cross-attention"):
            families.image_positions(model.config, family, batch)
        return
    try:
        shared, _ = _shared(model, processor, family, "last", batch_size=8)
    except (RuntimeError, ValueError):  # the T5 encoder is no decoder the suffixes could continue
        assert family.decoder_input_ids
        return
    assert _relative_diff(shared[:12], _whole(model, processor, family, "last")[:12]) > 1e-3
