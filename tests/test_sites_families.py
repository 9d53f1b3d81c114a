"""Every family, every site, through the wrapper: one pass, sharing exact, ``modules=`` agreeing with the decoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lmms_eval.api.instance import Instance
from PIL import Image

from lmms_probe_tasks import tiny, transport
from lmms_probe_tasks.extract import families, sites, vision

ARCHS = sorted(tiny.BUILDERS)
TEXTS = ("is it red", "a cat is here", "two dogs", "is it red too", "blue?", "x")


def _docs() -> list[dict]:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (40 + 8 * i, 48, 3), dtype=np.uint8)) for i in range(3)]
    return [{"image": images[i % 3], "text": text} for i, text in enumerate(TEXTS)]  # two docs per image


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("sites_families")
    cache: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in cache:
            cache[arch] = Path(tiny.build_tiny(arch, root / arch))
        return cache[arch]

    return get


def _run(ckpt: Path, **model_args: Any) -> dict[str, np.ndarray]:
    from lmms_probe_tasks.models.hidden_states import HiddenStates

    model_args.setdefault("feature_cache", "none")
    wrapper = HiddenStates(pretrained=str(ckpt), batch_size=2, **model_args)
    docs = _docs()
    wrapper.task_dict = {"t": {"test": docs}}
    requests = [
        Instance("generate_until", (d["text"], {"probe": True}, lambda d: [d["image"]], i, "t", "test"), i,
                 {"task": "t", "doc_id": i, "repeats": 1})
        for i, d in enumerate(docs)
    ]  # fmt: skip
    items = [transport.STORE.take(key) for key in wrapper.generate_until(requests)]

    def array(f: Any) -> np.ndarray:  # cached documents travel as a path
        return (f.layers if f.layers is not None else transport.read_verified(f.path)).astype(np.float32)

    return {site: np.stack([array(item[site]) for item in items]) for site in items[0]}


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.abs(a - b).max(axis=(0, 2)) / np.abs(b).max(axis=(0, 2))).max())


@pytest.mark.parametrize("arch", ARCHS)
def test_every_site_the_family_has_comes_out_and_sharing_keeps_it(built: Any, arch: str) -> None:
    from transformers import AutoConfig

    ckpt = built(arch)
    config = AutoConfig.from_pretrained(ckpt)
    have = sites.available_sites(config, families.lookup(config))
    assert "vision" in have  # every family in the table has its vision rows
    wanted = f"[{','.join(have)}]"
    on, off = _run(ckpt, sites=wanted, share_prefix="true"), _run(ckpt, sites=wanted, share_prefix="false")
    assert sorted(on) == sorted(have)
    depth = vision.vision_depth(config, families.family_key(config))
    assert on["vision"].shape[1] == depth and on["language"].shape[1] == config.get_text_config().num_hidden_layers + 1
    for site in have:
        assert np.isfinite(on[site]).all()
        assert _relative(on[site], off[site]) <= 2e-3, site  # float rounding (and float16 transport) only


def test_mllama_has_no_projector_and_says_which_sites_it_has(built: Any) -> None:
    with pytest.raises(ValueError, match=r"sites=projector is not available for 'mllama'.*has sites: language, vision"):
        _run(built("mllama"), sites="projector")


@pytest.mark.parametrize(
    ("arch", "glob"),
    [("llava", "model.language_model.layers.*"), ("qwen2_vl", "model.language_model.layers.*"),
     ("idefics3", "model.text_model.layers.*"), ("gemma3", "**.language_model.layers.*")],
)  # fmt: skip
def test_a_glob_over_the_decoder_layers_gives_the_decoder_rows_with_sharing(built: Any, arch: str, glob: str) -> None:
    feats = _run(built(arch), modules=glob, pooling="mean")
    n = feats["modules"].shape[1]
    # Module k's output is decoder row k + 1; the last module's output precedes the final norm (row L).
    np.testing.assert_allclose(feats["modules"][:, : n - 1], feats["language"][:, 1:n], rtol=0, atol=0)


def test_vision_modules_pool_like_the_vision_rows(built: Any) -> None:
    feats = _run(built("qwen2_vl"), sites="vision", modules="model.visual.blocks.*")
    np.testing.assert_array_equal(feats["modules"], feats["vision"][:, 1:])  # block k's output is vision row k + 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"sites": "bogus"}, r"unknown 'bogus'; valid: vision, projector, language, modules"),
        ({"sites": "modules"}, r"no modules= glob"),
        ({"modules": "model.language_model.layer.*"}, r"model\.language_model\.layers\.0"),
        ({"modules": "model.multi_modal_projector"}, r"sits on neither stream.*sites=projector"),
        ({"sites": "vision", "blind": "noimage"}, r"blind=noimage drops it"),
    ],
)
def test_bad_site_arguments_fail_at_start_with_the_fix(built: Any, args: dict, message: str) -> None:
    from lmms_probe_tasks.models.hidden_states import HiddenStates

    with pytest.raises(ValueError, match=message):
        HiddenStates(pretrained=str(built("llava")), feature_cache="none", **args)


def test_each_site_is_cached_and_the_decoder_rows_are_shared_with_a_language_run(built: Any, tmp_path: Path) -> None:
    from lmms_probe_tasks.models.hidden_states import HiddenStates

    cache = str(tmp_path / "cache")
    first = _run(built("llava"), sites="[vision,projector,language]", feature_cache=cache)
    files = sorted((tmp_path / "cache").rglob("*.npy"))
    assert len(files) == 3 * len(TEXTS)  # one entry per document and site
    again = _run(built("llava"), sites="[vision,projector,language]", feature_cache=cache)
    assert all(np.array_equal(first[s], again[s]) for s in first)
    assert sorted((tmp_path / "cache").rglob("*.npy")) == files  # nothing recomputed
    language = _run(built("llava"), feature_cache=cache)  # sites=language: the same decoder entries
    np.testing.assert_array_equal(language["language"], first["language"])
    wrapper = HiddenStates(pretrained=str(built("llava")), feature_cache=cache, sites="vision")
    assert wrapper._site_keys["vision"] != wrapper._site_keys.get("language")
