"""sites=vision: hooks on each family's vision encoder give, per document, what the encoder itself gives.

For every tiny builder whose family :data:`~lmms_probe_tasks.extract.vision.VISION` supports,
a batch of three documents with different images (one with two images where the family
takes several) runs through ``model(**inputs)`` inside :func:`vision_capture`; each
document is then run ALONE through the processor and the encoder's own forward
(``output_hidden_states=True``, or the model's own ``get_image_features`` where it picks
tiles), and its per-layer states are averaged over all positions of all its tiles. The
two must agree: the layout maps rows to documents, drops padding, and the rows are the
encoder's own hidden states.
"""

from __future__ import annotations

import types
from typing import Any

import pytest

from lmms_probe_tasks import tiny
from lmms_probe_tasks.extract import families, vision
from lmms_probe_tasks.extract.capture import StopForward
from tests.family_facts import FACTS

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
Image = pytest.importorskip("PIL.Image")
np = pytest.importorskip("numpy")

ARCHS = sorted(tiny.BUILDERS)
#: Families whose processor/model take one image per document only.
ONE_IMAGE = {"kosmos2", "instructblip", "instructblip_t5"}
TEXTS = ("Is there a cat?", "Describe the picture in some detail, please.", "Dog?")
RTOL, ATOL = 1e-3, 1e-5


def _noise(size: tuple[int, int], seed: int) -> Any:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def _docs(arch: str) -> list[list[Any]]:
    """Three documents, different image sizes (so tiling families tile differently); doc 0 has two images."""
    first = [_noise((64, 48), 0)] if arch in ONE_IMAGE else [_noise((64, 48), 0), _noise((90, 30), 3)]
    return [first, [_noise((20, 40), 1)], [_noise((33, 33), 2)]]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _site(model: Any, arch: str) -> Any:
    entry = vision.VISION[families.family_key(model.config)]
    if isinstance(entry, str):
        pytest.skip(f"{arch}: sites=vision unsupported ({entry})")
    return entry


def _batch(processor: Any, family: Any, docs: list[list[Any]], texts: tuple[str, ...] = TEXTS) -> Any:
    prompts = [families.build_prompt(processor, family, text, len(images)) for text, images in zip(texts, docs)]
    return processor(images=families.processor_images(family, docs), text=prompts, padding=True, return_tensors="pt")


def _capture(model: Any, family: Any, site: Any, batch: Any, docs: list[list[Any]], stop: bool = True) -> Any:
    layout = vision.vision_layout(batch, site, [len(images) for images in docs], config=model.config)
    with torch.inference_mode(), vision.vision_capture(model, site, layout, stop=stop) as captured:
        try:
            model(**families.forward_kwargs(model, family, batch))
        except StopForward:
            pass
    return captured["vision"]


def _mllama_states(model: Any, one: Any) -> list[Any]:
    """Mllama's two encoders' own returned per-layer tuples (+ the local encoder's input), real tiles only."""
    tower, kept = model.model.vision_model, {}

    def keep(name: str) -> Any:
        def hook(module: Any, args: tuple, kwargs: dict, out: Any) -> None:
            kept[name] = (kwargs.get("hidden_states", args[0] if args else None), out.hidden_states)

        return hook

    handles = [
        tower.transformer.register_forward_hook(keep("local"), with_kwargs=True),
        tower.global_transformer.register_forward_hook(keep("global"), with_kwargs=True),
    ]
    try:
        tower(**{k: one[k] for k in ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask")})
    finally:
        for handle in handles:
            handle.remove()
    rows, media, tiles = one["pixel_values"].shape[:3]
    positions = (model.config.vision_config.image_size // model.config.vision_config.patch_size) ** 2 + 1
    real = one["aspect_ratio_mask"].reshape(rows * media, tiles).bool()
    real &= (one["aspect_ratio_ids"].reshape(-1) != 0).unsqueeze(-1)
    states = [kept["local"][0], *kept["local"][1], *kept["global"][1]]
    # Each tile is padded to a multiple of 8 positions; its first `positions` are CLS + patches.
    return [s.reshape(rows * media, tiles, -1, s.shape[-1])[:, :, :positions][real] for s in states]


def _reference(model: Any, processor: Any, family: Any, site: Any, images: list[Any]) -> Any:
    """``[n_rows, d]``: ONE document alone through the encoder's own forward, mean over all its positions."""
    one = _batch(processor, family, [images])
    inner, config = model.model if hasattr(model, "model") else model, model.config
    encoder = dict(model.named_modules())[site.encoder]
    with torch.inference_mode():
        if site.layout == "images":
            states = encoder(pixel_values=one["pixel_values"], output_hidden_states=True).hidden_states
        elif site.layout == "packed":
            states = encoder(one["pixel_values"], grid_thw=one["image_grid_thw"], output_hidden_states=True)
            states = states.hidden_states
        elif site.layout == "anyres":  # the model's own tile selection
            extra = {"batch_num_images": one["batch_num_images"]} if "batch_num_images" in one else {}
            states = inner.get_image_features(
                pixel_values=one["pixel_values"],
                image_sizes=one["image_sizes"],
                vision_feature_layer=config.vision_feature_layer,
                vision_feature_select_strategy=config.vision_feature_select_strategy,
                output_hidden_states=True,
                **extra,
            ).hidden_states
        elif site.layout == "tiles":  # the model drops all-zero tiles itself
            states = inner.get_image_features(
                pixel_values=one["pixel_values"],
                pixel_attention_mask=one["pixel_attention_mask"],
                output_hidden_states=True,
            ).hidden_states
        else:
            states = _mllama_states(model, one)
    return torch.stack([s.float().reshape(-1, s.shape[-1]).mean(dim=0) for s in states])


@pytest.mark.parametrize("arch", ARCHS)
def test_vision_rows_equal_the_encoders_own_states_per_document(checkpoint: Any, arch: str) -> None:
    model, processor, family = checkpoint(arch)
    site = _site(model, arch)
    docs = _docs(arch)
    batch = _batch(processor, family, docs)
    got = _capture(model, family, site, batch, docs)
    depth = vision.vision_depth(model.config, families.family_key(model.config))
    assert tuple(got.shape) == (len(docs), depth, model.config.vision_config.hidden_size)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    for row, images in enumerate(docs):
        want = _reference(model, processor, family, site, images)
        assert want.shape[0] == depth  # the encoder's own tuple has vision_depth rows
        torch.testing.assert_close(got[row], want, rtol=RTOL, atol=ATOL, msg=f"{arch} doc {row}")
    assert float((got[0] - got[1]).abs().max()) > 1e-4  # different images, different rows


@pytest.mark.parametrize("arch", ARCHS)
def test_stop_ends_the_forward_after_the_last_vision_block(checkpoint: Any, arch: str) -> None:
    model, processor, family = checkpoint(arch)
    site = _site(model, arch)
    docs = _docs(arch)
    batch = _batch(processor, family, docs)
    layout = vision.vision_layout(batch, site, [len(images) for images in docs], config=model.config)
    blocks = vision.vision_blocks(model, site)
    # transformers installs its own output-capturing hooks on the first forward that selects
    # hidden states (LLaVA's vision_feature_layer) and keeps them: run one first, then count.
    with torch.inference_mode():
        model(**families.forward_kwargs(model, family, batch))
    before = [(len(block._forward_hooks), len(block._forward_pre_hooks)) for block in blocks]
    calls = {"decoder": 0}
    counter = families.decoder_layers(model, family)[0].register_forward_pre_hook(
        lambda module, args: calls.__setitem__("decoder", 1 + calls["decoder"])
    )
    try:
        with pytest.raises(StopForward), torch.inference_mode():
            with vision.vision_capture(model, site, layout, stop=True) as captured:
                model(**families.forward_kwargs(model, family, batch))
        assert calls["decoder"] == 0  # the decoder never ran
        assert captured["vision"].shape[1] == len(blocks) + 1  # filled before the stop
        with torch.inference_mode(), vision.vision_capture(model, site, layout, stop=False) as again:
            model(**families.forward_kwargs(model, family, batch))
        assert calls["decoder"] == 1  # without stop the forward runs on
        torch.testing.assert_close(again["vision"], captured["vision"])
    finally:
        counter.remove()
    # Hooks are always removed.
    assert [(len(block._forward_hooks), len(block._forward_pre_hooks)) for block in blocks] == before


@pytest.mark.parametrize("arch", ARCHS)
def test_blocks_prefix_and_depth_come_from_the_table(checkpoint: Any, arch: str) -> None:
    model, _, _ = checkpoint(arch)
    site = _site(model, arch)
    key = families.family_key(model.config)
    names = {id(module): name for name, module in model.named_modules()}
    prefix = vision.vision_prefix(model, site)
    blocks = vision.vision_blocks(model, site)
    assert len(blocks) + 1 == vision.vision_depth(model.config, key)
    assert all(names[id(block)].startswith(prefix + ".") for block in blocks)
    # The decoder is off the vision stream.
    assert not names[id(families.decoder_layers(model, families.lookup(model.config))[0])].startswith(prefix + ".")


def _module_outputs(model: Any, family: Any, target: Any, batch: Any) -> Any:
    """``target``'s output (first element of a tuple) during a full forward over ``batch``."""
    seen: list[Any] = []
    handle = target.register_forward_hook(lambda mod, args, out: seen.append(out[0] if isinstance(out, tuple) else out))
    try:
        with torch.inference_mode():
            model(**families.forward_kwargs(model, family, batch))
    finally:
        handle.remove()
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize(("arch", "module"), [("llava", "self_attn"), ("qwen2_vl", "mlp"), ("idefics3", "mlp")])
def test_pool_vision_takes_any_module_on_the_vision_stream(checkpoint: Any, arch: str, module: str) -> None:
    """A sub-module's output (a tuple for CLIP attention, packed for Qwen) pools per document like the blocks."""
    model, processor, family = checkpoint(arch)
    site = _site(model, arch)
    docs = _docs(arch)
    batch = _batch(processor, family, docs)
    layout = vision.vision_layout(batch, site, [len(images) for images in docs], config=model.config)
    target = getattr(vision.vision_blocks(model, site)[1], module)
    seen: list[Any] = []
    handle = target.register_forward_hook(lambda mod, args, out: seen.append(vision.pool_vision(out, layout)))
    try:
        with torch.inference_mode():
            model(**families.forward_kwargs(model, family, batch))
    finally:
        handle.remove()
    (pooled,) = seen
    for row, images in enumerate(docs):
        alone = _module_outputs(model, family, target, _batch(processor, family, [images], TEXTS[row:]))
        want = alone.float().reshape(-1, alone.shape[-1]).mean(dim=0)
        torch.testing.assert_close(pooled[row], want, rtol=RTOL, atol=ATOL, msg=f"{arch}.{module} doc {row}")


def test_every_family_has_an_entry_and_every_supported_one_is_tested() -> None:
    assert set(vision.VISION) == set(families.FAMILIES)
    for key, entry in vision.VISION.items():
        if isinstance(entry, vision.VisionSite):
            assert entry.layout in vision.LAYOUTS, key
            assert entry.notes, key
            # The parametrized tests above run every builder of every supported family.
            assert FACTS[key].tiny and set(FACTS[key].tiny) <= set(ARCHS), key


def test_check_vision_names_the_family_and_its_sites(monkeypatch: pytest.MonkeyPatch) -> None:
    config = transformers.PretrainedConfig()
    monkeypatch.setitem(vision.VISION, "llava", "per-tile rows cannot be mapped to documents")
    with pytest.raises(ValueError) as info:
        vision.check_vision(config, "llava")
    assert str(info.value) == (
        "sites=vision is not available for 'llava' (per-tile rows cannot be mapped to documents); "
        "this family has sites: language, projector"
    )
    with pytest.raises(ValueError, match=r"'not_a_family' \(not in .*VISION\); this family has sites: language"):
        vision.vision_depth(config, "not_a_family")


def test_check_vision_refuses_a_tower_it_was_not_checked_on(checkpoint: Any) -> None:
    model, _, _ = checkpoint("llava")
    assert vision.check_vision(model.config, "llava") is vision.VISION["llava"]
    pixtral = types.SimpleNamespace(vision_config=types.SimpleNamespace(model_type="pixtral"))
    with pytest.raises(ValueError, match=r"'llava' \(vision tower 'pixtral' is not one of clip_vision_model, "):
        vision.check_vision(pixtral, "llava")


def test_pool_vision_weights_positions_by_the_mask_and_checks_shapes() -> None:
    states = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)  # [units, seq, d]
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    layout = vision.VisionLayout(units=torch.tensor([0, 0]), mask=mask, n_rows=1)
    want = torch.stack([states[0, 0], states[0, 1], states[1, 0]]).mean(dim=0, keepdim=True)
    torch.testing.assert_close(vision.pool_vision(states, layout), want)
    with pytest.raises(ValueError, match="does not fit"):
        vision.pool_vision(states[:1], layout)
    with pytest.raises(ValueError, match="positions per tile"):
        vision.pool_vision(states[:, :2], layout)
    packed = vision.VisionLayout(units=torch.tensor([1, 0, 1]), mask=None, n_rows=2, packed=True)
    torch.testing.assert_close(
        vision.pool_vision((states[0], None), packed), torch.stack([states[0, 1], (states[0, 0] + states[0, 2]) / 2])
    )


def test_idefics3_layout_drops_padding_tiles_and_masks_padded_patches(checkpoint: Any) -> None:
    model, processor, family = checkpoint("idefics3")
    site = _site(model, "idefics3")
    docs = _docs("idefics3")
    batch = _batch(processor, family, docs)
    real = (batch["pixel_values"] != 0).flatten(2).any(dim=-1)
    assert len(set(real.sum(dim=1).tolist())) == len(docs), "documents must have different tile counts"
    layout = vision.vision_layout(batch, site, [len(images) for images in docs], config=model.config)
    assert layout.units.tolist() == [row for row, n in enumerate(real.sum(dim=1).tolist()) for _ in range(n)]
    # The bottom half of the first tile's pixels marked padding: its patches there leave the mean.
    vision_config = model.config.vision_config
    batch["pixel_attention_mask"][0, 0, vision_config.image_size // 2 :] = 0
    masked = vision.vision_layout(batch, site, [len(images) for images in docs], config=model.config)
    side = vision_config.image_size // vision_config.patch_size
    first = masked.mask[0].reshape(side, side)
    assert first[: side // 2].all() and not first[side // 2 :].any()
    assert masked.mask[1:].all()


def test_layout_refuses_what_it_cannot_map(checkpoint: Any) -> None:
    model, processor, family = checkpoint("qwen2_vl")
    site = _site(model, "qwen2_vl")
    docs = _docs("qwen2_vl")
    batch = _batch(processor, family, docs)
    with pytest.raises(ValueError, match="sums to 3"):
        vision.vision_layout(batch, site, [1, 1, 1])
    with pytest.raises(ValueError, match="no image"):
        vision.vision_layout(batch, site, [3, 0, 1])
    with pytest.raises(ValueError, match="video"):
        vision.vision_layout({**batch, "pixel_values_videos": batch["pixel_values"]}, site, [2, 1, 1])
    llava_next = vision.VISION["llava_next"]
    with pytest.raises(ValueError, match="needs the model config"):
        vision.vision_layout(batch, llava_next, [2, 1, 1])
