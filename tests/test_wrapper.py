"""The hidden_states wrapper on a tiny real LLaVA checkpoint: hooks, truncation, batching, init."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmms_probe_tasks.extract import extract_batch, find_decoder, pool, pooling_weights


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from lmms_probe_tasks.tiny import build_tiny

    return build_tiny("llava", tmp_path_factory.mktemp("w") / "llava")


@pytest.fixture(scope="module")
def wrapper(tiny):
    from lmms_probe_tasks.models.hidden_states import HiddenStates

    return HiddenStates(pretrained=str(tiny))


def _docs(n: int):
    from PIL import Image

    rng = np.random.default_rng(0)
    texts = [" ".join(["the red circle is left of the square"] * int(k)) for k in rng.integers(1, 4, n)]
    images = [[Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8))] for _ in range(n)]
    return texts, images


def test_hooks_match_output_hidden_states(wrapper):
    texts, images = _docs(3)
    inputs = wrapper._inputs(texts, images)
    n = wrapper.meta["n_layers"]
    for pooling in ("last", "mean"):
        ours = extract_batch(wrapper.model, inputs, pooling, range(n + 1)).astype(np.float32)
        with torch.inference_mode():
            out = wrapper.model(**inputs, output_hidden_states=True)
        weights = pooling_weights(inputs["attention_mask"], pooling)
        ref = torch.stack([pool(h, weights) for h in out.hidden_states], 1).numpy()
        np.testing.assert_allclose(ours, ref, atol=2e-3, rtol=2e-3)  # float16 storage


def test_layers_above_the_deepest_are_not_computed(wrapper):
    texts, images = _docs(2)
    inputs = wrapper._inputs(texts, images)
    parts = find_decoder(wrapper.model)
    ran = []
    handles = [layer.register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i, layer in enumerate(parts.layers)]
    head = wrapper.model.get_output_embeddings().register_forward_hook(lambda *a: ran.append("head"))
    try:
        feats = extract_batch(wrapper.model, inputs, "last", [0, 2], parts=parts)
        assert ran == [0, 1] and feats.shape[:2] == (2, 2)
        ran.clear()
        extract_batch(wrapper.model, inputs, "last", range(len(parts.layers) + 1), parts=parts)
        assert "head" not in ran  # the LM head never runs, even for the last layer
    finally:
        for handle in handles + [head]:
            handle.remove()


def test_batch_size_and_padding_do_not_change_features(wrapper):
    texts, images = _docs(4)
    for pooling in ("last", "mean", "image", "text"):
        wrapper.pooling = pooling
        try:
            batched = wrapper.extract(wrapper._inputs(texts, images))
            alone = np.concatenate([wrapper.extract(wrapper._inputs([t], [i])) for t, i in zip(texts, images)])
        finally:
            wrapper.pooling = "last"
        np.testing.assert_allclose(batched.astype(np.float32), alone.astype(np.float32), atol=2e-3, rtol=2e-3)


def test_processor_without_chat_template_gets_the_fallback_layout(wrapper, monkeypatch):
    """The documented fallback (``<image>\\n{text}``) is what the wrapper runs, and the processor takes it."""
    assert wrapper.meta["prompt_format"] == "chat_template"
    templated = wrapper.build_prompt("Is it red?", 1)
    assert "<image>" in templated and "Is it red?" in templated and templated != "<image>\nIs it red?"
    monkeypatch.setattr(wrapper.processor, "chat_template", None)
    assert wrapper.build_prompt("Is it red?", 1) == "<image>\nIs it red?"
    texts, images = _docs(2)
    feats = wrapper.extract(wrapper._inputs(texts, images))
    assert feats.shape == (2, wrapper.meta["n_layers"] + 1, wrapper.meta["hidden_size"])


def test_random_init_differs_and_is_recorded(tiny, wrapper):
    from lmms_probe_tasks.models.hidden_states import HiddenStates

    rand = HiddenStates(pretrained=str(tiny), init="random", seed=1, layers="[1,4]")
    texts, images = _docs(2)
    a = extract_batch(wrapper.model, wrapper._inputs(texts, images), "last", [1, 4])
    b = extract_batch(rand.model, rand._inputs(texts, images), "last", rand.layers)
    assert not np.allclose(a, b)
    assert rand.meta["init"] == "random (seed 1)" and rand.meta["layers"] == [1, 4]
    with pytest.raises(ValueError, match="init='noise' is not supported; valid: pretrained, random"):
        HiddenStates(pretrained=str(tiny), init="noise")
    with pytest.raises(ValueError, match="layer 9 out of range for a 4-layer model"):
        HiddenStates(pretrained=str(tiny), layers="[0,9]")


def test_a_family_without_a_findable_decoder_fails_before_data(tiny, monkeypatch):
    from lmms_probe_tasks.extract import families
    from lmms_probe_tasks.models.hidden_states import HiddenStates

    broken = families.Family(decoder_layers="nowhere.layers", final_norm="nowhere.norm")
    monkeypatch.setattr(families, "lookup", lambda config: broken)
    monkeypatch.setattr("lmms_probe_tasks.extract.layers._LAYER_LIST_NAMES", ("no_such_list",))
    with pytest.raises(ValueError, match="no decoder layer list found"):
        HiddenStates(pretrained=str(tiny))
