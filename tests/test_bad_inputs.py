"""The README's "what happens when …" table, one test each (cache rows: test_feature_cache.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lmms_probe_tasks.data.contract import check_docs
from lmms_probe_tasks.data.images import decode_problem, to_rgb


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "LA", "1"])
def test_any_image_mode_becomes_rgb(mode):
    image = Image.new("RGB", (8, 6), (200, 40, 40)).convert(mode)
    out = to_rgb(image)
    assert out.mode == "RGB" and out.size == (8, 6)


def test_transparent_pixels_become_white_not_black():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert to_rgb(image).getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_greyscale_is_scaled_not_clipped():
    wide = Image.fromarray(np.full((4, 4), 40000, dtype=np.uint16))
    assert wide.mode.startswith("I;16")
    assert to_rgb(wide).getpixel((0, 0)) == (155, 155, 155)  # 40000 / 257


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (20, 10), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert to_rgb(Image.open(path)).size == (10, 20)


def test_decompression_bomb_is_skipped_with_its_own_reason(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("1", (20000, 20000)).save(path)  # 400 Mpx, a few hundred kB on disk
    assert decode_problem(path) == "image_too_large"
    assert decode_problem(b"\xff\xd8\xff\xe0 truncated") == "corrupt_image"
    assert decode_problem(tmp_path / "absent.jpg") == "missing_image"


def test_duplicate_uids_and_bad_splits_fail_at_task_load():
    import datasets

    image = Image.new("RGB", (2, 2))
    docs = datasets.Dataset.from_dict(
        {"uid": ["a", "b", "a"], "probe_split": ["train", "test", "train"], "image": [image] * 3, "label": [0, 1, 0]}
    )
    with pytest.raises(ValueError, match=r"1 duplicate doc uid\(s\), e.g. \['a'\]"):
        check_docs("t", docs, "label")
    docs = docs.map(lambda d, i: {"uid": str(i), "probe_split": "dev"}, with_indices=True)
    with pytest.raises(ValueError, match="probe_split values \\['dev'\\]; valid: train, test"):
        check_docs("t", docs, "label")
    with pytest.raises(ValueError, match="lack column"):
        check_docs("t", docs, "labels")


def test_non_utf8_jsonl_line_is_skipped_and_counted(tmp_path):
    from lmms_probe_tasks.data.snli_ve import snli_ve_docs
    from tests.datasets_fixtures import write_snli_ve

    fx = write_snli_ve(tmp_path / "snli")
    with (fx.root / "snli_ve_train.jsonl").open("ab") as handle:
        handle.write(b'{"Flickr30K_ID": "1", "sentence2": "caf\xe9", "gold_label": "neutral"}\n')
    report = snli_ve_docs(n_train=6, n_test=3, snli_ve_dir=str(fx.root)).report
    assert report["splits"]["train"]["skipped"]["malformed_line"]["count"] == 1


def test_remote_code_checkpoint_names_the_flag(tmp_path):
    from lmms_probe_tasks.models.hidden_states import HiddenStates

    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "my_vlm", "auto_map": {"AutoConfig": "configuration_my.MyConfig"}})
    )
    (tmp_path / "configuration_my.py").write_text(
        "from transformers import PretrainedConfig\nclass MyConfig(PretrainedConfig):\n    model_type = 'my_vlm'\n"
    )
    with pytest.raises(ValueError, match="add trust_remote_code=true to --model_args"):
        HiddenStates(pretrained=str(tmp_path))
