"""The hidden_states wrapper on a tiny real LLaVA checkpoint: hooks, truncation, batching, init."""

from __future__ import annotations

import dataclasses

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


# -- shared prompt prefixes (share_prefix=true) ------------------------------------


def _image_docs(n_images: int = 3, per_image: int = 4) -> list[dict]:
    """``per_image`` documents on each of ``n_images`` images, then one on an image of its own."""
    from PIL import Image

    rng = np.random.default_rng(1)
    texts = ["is there a cat", "the red circle is left of the blue square", "two dogs", "a car near the big tree here"]
    images = [Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)) for _ in range(n_images + 1)]
    docs = [{"image": images[i], "text": texts[k % len(texts)]} for i in range(n_images) for k in range(per_image)]
    return docs + [{"image": images[-1], "text": texts[0]}]


def _features(wrapper, docs: list[dict], ids: list[int] | None = None) -> np.ndarray:
    """Run docs through ``generate_until`` (as lmms-eval does) and take their features back from the store."""
    from lmms_eval.api.instance import Instance

    from lmms_probe_tasks import transport

    wrapper.task_dict = {"t": {"test": docs}}
    ids = list(range(len(docs))) if ids is None else ids
    requests = [
        Instance("generate_until", (docs[i]["text"], {"probe": True}, lambda d: [d["image"]], i, "t", "test"), i,
                 {"task": "t", "doc_id": i, "repeats": 1})
        for i in ids
    ]  # fmt: skip
    out = []
    for key in wrapper.generate_until(requests):
        item = transport.STORE.take(key)["language"]
        out.append(item.layers if item.layers is not None else transport.feature_cache.read_verified(item.path))
    return np.stack(out).astype(np.float32)


@pytest.fixture
def shared_docs_count(monkeypatch):
    """Collects the documents (positions among those computed) the wrapper ran as suffixes of a shared prefix."""
    from lmms_probe_tasks.models import probe_requests

    counted = []
    real = probe_requests.extract_prefix_batch

    def counting(*args, **kwargs):
        for docs, feats in real(*args, **kwargs):
            counted.extend(docs)
            yield docs, feats

    monkeypatch.setattr(probe_requests, "extract_prefix_batch", counting)
    return counted


def test_shared_prefixes_give_the_features_of_whole_documents(tiny, shared_docs_count):
    from lmms_probe_tasks.models.hidden_states import HiddenStates

    wrapper = HiddenStates(pretrained=str(tiny), feature_cache="none")
    docs = _image_docs()
    for pooling in ("last", "mean", "image", "text"):
        wrapper.pooling = pooling
        wrapper.share_prefix = False
        whole = _features(wrapper, docs)
        for batch_size in (1, 3, 8):
            wrapper.batch_size_per_gpu, wrapper.share_prefix = batch_size, True
            shared_docs_count.clear()
            shared = _features(wrapper, docs)
            assert sorted(shared_docs_count) == list(range(12))  # the lone document runs whole
            # Float16 storage: at most one rounding step apart, relative to each layer's largest value.
            diff = np.abs(shared - whole).max(axis=(0, 2)) / np.abs(whole).max(axis=(0, 2))
            assert diff.max() < 2e-3, (pooling, batch_size, diff)


def test_resumed_run_mixes_cached_and_shared_documents(tiny, tmp_path, shared_docs_count):
    from lmms_probe_tasks.models.hidden_states import HiddenStates

    docs = _image_docs()
    first = HiddenStates(pretrained=str(tiny), feature_cache=str(tmp_path), share_prefix="false", batch_size=3)
    second = HiddenStates(pretrained=str(tiny), feature_cache=str(tmp_path), share_prefix=True, batch_size=3)
    # Features are the same either way, so share_prefix is recorded but never keys the cache.
    assert first.fingerprint == second.fingerprint
    assert (first.meta["share_prefix"], second.meta["share_prefix"]) == (False, True)
    _features(first, docs, [0, 1, 4])  # a killed run: two docs of image 0, one of image 1 cached
    resumed = _features(second, docs)
    assert second.meta["feature_cache"]["computed"] == len(docs) - 3
    # Images 0 and 1 keep two and three uncached docs: those share, as do image 2's four.
    assert len(shared_docs_count) == 2 + 3 + 4
    whole = _features(HiddenStates(pretrained=str(tiny), feature_cache="none", share_prefix=False), docs)
    np.testing.assert_allclose(resumed, whole, rtol=2e-3, atol=2e-3)


def test_share_prefix_is_validated_and_off_where_the_family_says(tiny, monkeypatch, shared_docs_count):
    from lmms_probe_tasks.extract import families
    from lmms_probe_tasks.models.hidden_states import HiddenStates

    with pytest.raises(ValueError, match="share_prefix='sometimes' is not supported; valid: true, false"):
        HiddenStates(pretrained=str(tiny), share_prefix="sometimes")
    real = families.lookup
    monkeypatch.setattr(families, "lookup", lambda config: dataclasses.replace(real(config), prefix_sharing=False))
    wrapper = HiddenStates(pretrained=str(tiny), feature_cache="none", share_prefix=True)
    assert wrapper.share_prefix is False and wrapper.meta["share_prefix"] is False
    _features(wrapper, _image_docs(n_images=1))
    assert shared_docs_count == []


def test_probe_scores_are_identical_with_and_without_shared_prefixes(tiny, tmp_path, shared_docs_count):
    """The in-process evaluator on a small shapes entailment task (3 statements per scene)."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from lmms_probe_tasks import TASK_DIR
    from lmms_probe_tasks.models.hidden_states import HiddenStates

    text = (TASK_DIR / "probe_shapes_entailment.yaml").read_text()
    text = text.replace("include: _default_template_yaml", f"include: {TASK_DIR / '_default_template_yaml'}")
    builder = "  builder: lmms_probe_tasks.data.shapes.entailment_docs"
    text = text.replace(builder, builder + "\n  n_train: 60\n  n_test: 30")
    (tmp_path / "probe_shapes_entailment.yaml").write_text(text)
    scores = []
    for share in (True, False):
        manager = TaskManager("ERROR", include_path=str(tmp_path), include_defaults=False)
        model = HiddenStates(pretrained=str(tiny), feature_cache="none", share_prefix=share, batch_size=4)
        out = simple_evaluate(model=model, tasks=["probe_shapes_entailment"], task_manager=manager, log_samples=False)
        row = out["results"]["probe_shapes_entailment"]
        scores.append(
            {k: v for k, v in row.items() if k.startswith("acc_l") and k[5:7].isdigit() and "stderr" not in k}
        )
    assert len(shared_docs_count) > 60  # most of the 90 docs ran as suffixes in the first run
    assert len(scores[0]) == 5 and scores[0] == scores[1]


def test_shared_prefixes_with_a_layer_subset(tiny, shared_docs_count):
    """The prefix cache holds only the layers the pass ran; layer 0 alone shares nothing (no layer to skip)."""
    from lmms_probe_tasks.models.hidden_states import HiddenStates

    docs = _image_docs(n_images=2)
    for layers, shared_docs in (("[1,3]", 8), ("[0]", 0)):
        wrapper = HiddenStates(pretrained=str(tiny), feature_cache="none", layers=layers, pooling="mean", batch_size=3)
        shared_docs_count.clear()
        shared = _features(wrapper, docs)
        assert len(shared_docs_count) == shared_docs
        wrapper.share_prefix = False
        np.testing.assert_allclose(shared, _features(wrapper, docs), rtol=2e-3, atol=2e-3)
