"""Pooling, layer selection, the one prompt builder and the wrapper's early argument checks (no checkpoint)."""

from __future__ import annotations

from types import SimpleNamespace
from unittest.mock import MagicMock

import pytest
import torch

from lmms_probe_tasks.extract import check_pooling, parse_layers, pool, pooling_weights
from lmms_probe_tasks.extract.families import FAMILIES, Family
from lmms_probe_tasks.extract.prompts import FALLBACK_LAYOUT, blind_images, build_prompt, prompt_format


def test_last_pooling_reads_the_mask_for_either_padding_side():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert torch.equal(pool(hidden, pooling_weights(right, "last")), torch.stack([hidden[0, 1], hidden[1, 3]]))
    assert torch.equal(pool(hidden, pooling_weights(left, "last")), torch.stack([hidden[0, 3], hidden[1, 3]]))


def test_mean_pooling_ignores_padding_and_is_float32():
    hidden = torch.randn(2, 5, 4, dtype=torch.bfloat16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    out = pool(hidden, pooling_weights(mask, "mean"))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[0], hidden[0, :3].float().mean(0))
    torch.testing.assert_close(out[1], hidden[1].float().mean(0))


def test_bad_pooling_lists_valid_values():
    with pytest.raises(ValueError, match="valid: last, mean, image, text"):
        check_pooling("bogus")


def test_image_and_text_pooling_split_the_real_positions():
    hidden = torch.arange(1 * 5 * 2, dtype=torch.float32).reshape(1, 5, 2)
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    image = torch.tensor([[False, True, True, False, False]])
    torch.testing.assert_close(
        pool(hidden, pooling_weights(mask, "image", image)), hidden[0, 1:3].mean(0, keepdim=True)
    )
    torch.testing.assert_close(
        pool(hidden, pooling_weights(mask, "text", image)), hidden[0, [0, 3]].mean(0, keepdim=True)
    )
    with pytest.raises(ValueError, match="no image positions"):
        pooling_weights(mask, "image", torch.zeros_like(image))


def test_chat_template_family_without_a_template_falls_back_to_image_line_then_text():
    processor = SimpleNamespace(image_token="<image>", chat_template=None)
    family = Family()  # chat_template layout
    assert FALLBACK_LAYOUT == "{image_tokens}\n{text}"
    assert build_prompt(processor, family, "Is there a cat?") == "<image>\nIs there a cat?"
    assert build_prompt(processor, family, "Two?", n_images=2) == "<image> <image>\nTwo?"
    assert build_prompt(processor, family, "None.", n_images=0) == "None."  # blind=noimage
    assert build_prompt(SimpleNamespace(), family, "x") == "<image>\nx"  # no image_token attribute
    assert prompt_format(processor, family) == "fallback: {image_tokens}\n{text}"


def test_chat_template_is_used_when_the_processor_has_one():
    processor = MagicMock(chat_template="{{ messages }}", image_token="<image>")
    processor.apply_chat_template.return_value = "USER: <image>\nHi ASSISTANT:"
    assert build_prompt(processor, Family(), "Hi") == "USER: <image>\nHi ASSISTANT:"
    (messages,), kwargs = processor.apply_chat_template.call_args
    assert messages == [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    assert kwargs == {"add_generation_prompt": True}
    assert prompt_format(processor, Family()) == "chat_template"


def test_families_that_place_the_image_themselves_get_their_own_layout():
    processor = SimpleNamespace(image_token="<image>", chat_template=None)
    assert build_prompt(processor, FAMILIES["paligemma"], "caption", n_images=2) == "<image><image>caption"
    assert build_prompt(processor, FAMILIES["kosmos-2"], "caption") == "caption"
    assert prompt_format(processor, FAMILIES["instructblip"]).startswith("bare text")
    with pytest.raises(ValueError, match="not one of chat_template"):
        build_prompt(processor, Family(prompt="bogus"), "x")


def test_blind_modes_keep_sizes_or_drop_images():
    from PIL import Image

    images = [[Image.new("RGB", (5, 3), "red")], []]
    assert blind_images(images, "none") is images
    assert blind_images(images, "noimage") == [[], []]
    (blank,), empty = blind_images(images, "blank")
    assert blank.size == (5, 3) and blank.getpixel((0, 0)) == (128, 128, 128) and empty == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("all", tuple(range(33))),
        ("0:33:4", tuple(range(0, 33, 4))),
        ("[0,8,16,32]", (0, 8, 16, 32)),
        ("0;8", (0, 8)),
        (8, (8,)),
        ("[32, 0, 0]", (0, 32)),
        ("28:", (28, 29, 30, 31, 32)),
    ],
)
def test_parse_layers_forms(value, expected):
    assert parse_layers(value, 32) == expected


def test_parse_layers_errors_name_the_valid_range():
    with pytest.raises(ValueError, match="layer 40 out of range for a 32-layer model; valid: 0–32"):
        parse_layers("[0,40]", 32)
    with pytest.raises(ValueError, match="not understood"):
        parse_layers("zero", 32)
    with pytest.raises(ValueError, match="selects no layer"):
        parse_layers("40:50", 32)


def test_missing_pretrained_is_named(tmp_path, monkeypatch):
    from lmms_probe_tasks.models.hidden_states import HiddenStates

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = str(tmp_path / "no-such-checkpoint")
    with pytest.raises(ValueError, match="no-such-checkpoint"):
        HiddenStates(pretrained=missing)


def test_bogus_pooling_fails_before_loading(tmp_path):
    from lmms_probe_tasks.models.hidden_states import HiddenStates

    # The checkpoint does not exist either: the pooling error must come first.
    with pytest.raises(ValueError, match="pooling='bogus'.*valid: last, mean, image, text"):
        HiddenStates(pretrained=str(tmp_path / "nothing"), pooling="bogus")


def test_text_only_checkpoint_is_refused_clearly(tmp_path, monkeypatch):
    from transformers import LlamaConfig, LlamaForCausalLM

    from lmms_probe_tasks.models.hidden_states import HiddenStates

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path / "llama")
    with pytest.raises(ValueError, match="'llama' checkpoint, not an image-text model"):
        HiddenStates(pretrained=str(tmp_path / "llama"))


def test_unknown_model_arg_is_named(tmp_path):
    from lmms_probe_tasks.models.hidden_states import HiddenStates

    with pytest.raises(ValueError, match=r"unknown model_args \['poolin'\]"):
        HiddenStates(pretrained=str(tmp_path), poolin="last")


def test_pooling_mask_is_the_unnormalised_pooling_weights():
    from lmms_probe_tasks.extract.capture import pooling_mask

    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    image = torch.tensor([[False, True, False, False], [False, True, True, False]])
    for pooling in ("last", "mean", "image", "text"):
        raw = pooling_mask(mask, pooling, image)
        assert set(raw.unique().tolist()) <= {0.0, 1.0}
        torch.testing.assert_close(raw / raw.sum(1, keepdim=True), pooling_weights(mask, pooling, image))
    assert pooling_mask(mask, "last").tolist() == [[0, 0, 1, 0], [0, 0, 0, 1]]


def test_share_prefix_flag_is_validated_recorded_and_not_fingerprinted():
    from lmms_probe_tasks.extract import settings

    assert settings.check_flag("share_prefix", True) is True
    assert settings.check_flag("share_prefix", "False") is False
    with pytest.raises(ValueError, match="share_prefix='yes please' is not supported; valid: true, false"):
        settings.check_flag("share_prefix", "yes please")
    assert "share_prefix" in settings.MODEL_ARGS
    # Recorded in every result, never part of the feature-cache key (features are equal either way).
    assert not set(settings._FINGERPRINT_KEYS) & set(settings._NOT_FINGERPRINTED)
    assert "share_prefix" in settings._NOT_FINGERPRINTED


def test_bogus_share_prefix_fails_before_loading(tmp_path):
    from lmms_probe_tasks.models.hidden_states import HiddenStates

    with pytest.raises(ValueError, match="share_prefix='maybe' is not supported; valid: true, false"):
        HiddenStates(pretrained=str(tmp_path / "nothing"), share_prefix="maybe")


def test_families_that_cannot_continue_a_prefix_turn_sharing_off():
    off = {key for key, family in FAMILIES.items() if not family.prefix_sharing}
    assert off == {"paligemma", "mllama", "instructblip", "instructblip+t5"}
    config = SimpleNamespace(model_type="not_a_family")
    from lmms_probe_tasks.extract.families import lookup

    assert lookup(config).prefix_sharing is False  # unverified: off
