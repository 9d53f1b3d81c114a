"""The shared-prefix planner and the cache/position plumbing around it, on synthetic token ids (no checkpoint)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmms_probe_tasks.extract.prefix_plan import DocTokens, common_prefix_length, plan_prefix_batches, share_windows
from lmms_probe_tasks.extract.shared_prefix import _continuation, expand_cache, truncate_inputs

IMAGE = [7] * 5  # five image tokens


def _doc(key: str, head: list[int], text: list[int]) -> DocTokens:
    tokens = np.array([1, *head, *text], dtype=np.int64)
    return DocTokens(key, tokens, image_end=1 + len(head))


def test_common_prefix_length():
    a, b = np.array([1, 2, 3, 4]), np.array([1, 2, 9])
    assert common_prefix_length([a, b]) == 2
    assert common_prefix_length([a, a[:3]]) == 3  # one is a prefix of the other
    assert common_prefix_length([a]) == 4
    assert common_prefix_length([a, np.array([5])]) == 0


def test_documents_of_one_image_share_past_the_image_and_keep_a_suffix():
    docs = {
        10: _doc("img-a", IMAGE, [3, 4, 5, 6]),
        11: _doc("img-a", IMAGE, [3, 4, 9]),
        12: _doc("img-a", IMAGE, [3, 4]),  # all but its last token is common
        20: _doc("img-b", IMAGE, [3, 8]),  # alone: no other document shows img-b
        30: DocTokens("", np.array([1, 2, 3]), image_end=0),  # no image
    }
    batches, alone = plan_prefix_batches(docs, max_groups=4)
    assert alone == [20, 30]
    (batch,) = batches
    assert batch.groups == ((10, 11, 12),) and batch.docs == (10, 11, 12) and batch.rows == (0, 0, 0)
    # Common prefix: <s> + image + [3, 4] = 8 tokens, capped at the shortest doc (8) minus one.
    assert batch.length == 7
    for doc in batch.docs:
        assert batch.length >= docs[doc].image_end and len(docs[doc].tokens) > batch.length


def test_same_image_but_different_tokens_before_its_end_do_not_share():
    docs = {0: _doc("k", IMAGE, [3, 4]), 1: _doc("k", [8] * 5, [3, 4]), 2: _doc("k", IMAGE, [3, 5])}
    batches, alone = plan_prefix_batches(docs, max_groups=4)
    assert [b.groups for b in batches] == [((0, 2),)] and alone == [1]


def test_batches_hold_groups_of_one_image_length_and_run_their_shortest_prefix():
    docs = {}
    for g in range(5):  # 5 images, 2 docs each; image g's docs agree on g extra text tokens
        common = list(range(100, 100 + g))
        docs[2 * g], docs[2 * g + 1] = _doc(f"i{g}", IMAGE, common + [1, 2]), _doc(f"i{g}", IMAGE, common + [3])
    docs[10], docs[11] = _doc("long", [7] * 9, [1]), _doc("long", [7] * 9, [2, 2])  # another image_end
    batches, alone = plan_prefix_batches(docs, max_groups=2)
    assert alone == []
    by_end = [{docs[d].image_end for d in b.docs} for b in batches]
    assert all(len(ends) == 1 for ends in by_end)  # never two image lengths in one batch
    assert [len(b.groups) for b in batches] == [2, 2, 1, 1]
    assert sorted(d for b in batches for d in b.docs) == list(range(12))
    for batch in batches:
        assert batch.length == min(
            min(common_prefix_length([docs[d].tokens for d in g]), min(len(docs[d].tokens) for d in g) - 1)
            for g in batch.groups
        )
    assert batches[0].groups == ((8, 9), (6, 7))  # longest common prefixes together


def test_share_windows_keep_each_images_documents_together():
    keys = ["a", "b", "a", "", "c", "c", "c", "d"]
    windows, alone = share_windows(keys, size=4)
    assert alone == [1, 3, 7]  # unique keys and no image
    assert windows == [[0, 2], [4, 5, 6]]  # a (2) + c (3) > 4: c opens a new window
    assert share_windows(["x"] * 9, size=4) == ([list(range(9))], [])  # a big group is never split


def test_truncate_inputs_cuts_sequence_aligned_entries_only():
    inputs = {
        "input_ids": torch.arange(12).reshape(2, 6),
        "attention_mask": torch.tensor([[1] * 6, [1] * 4 + [0] * 2]),
        "mm_token_type_ids": torch.zeros(2, 6, dtype=torch.long),
        "pixel_values": torch.zeros(2, 6),  # same shape, but image data: kept whole
        "image_grid_thw": torch.ones(2, 3, dtype=torch.long),
    }
    out = truncate_inputs(inputs, 4)
    assert out["input_ids"].shape == (2, 4) and out["mm_token_type_ids"].shape == (2, 4)
    assert out["pixel_values"].shape == (2, 6) and out["image_grid_thw"] is inputs["image_grid_thw"]
    with pytest.raises(ValueError, match="unpadded over their first 5 tokens: pad on the right"):
        truncate_inputs(inputs, 5)


def test_expand_cache_copies_rows_and_leaves_the_prefix_cache_alone():
    from transformers import DynamicCache

    cache = DynamicCache()
    keys = torch.arange(2 * 1 * 3 * 2, dtype=torch.float32).reshape(2, 1, 3, 2)
    cache.update(keys, -keys, 0)
    expanded = expand_cache(cache, torch.tensor([1, 1, 0]))
    assert torch.equal(expanded.layers[0].keys, keys[[1, 1, 0]])
    expanded.update(torch.zeros(3, 1, 1, 2), torch.zeros(3, 1, 1, 2), 0)  # a suffix pass appends
    assert expanded.get_seq_length() == 4 and cache.get_seq_length() == 3
    assert torch.equal(cache.layers[0].keys, keys)


def test_positions_continue_after_the_largest_prefix_position():
    assert _continuation(None, 2) is None
    plain = torch.arange(5)[None].expand(2, 5)
    assert _continuation(plain, 2).tolist() == [[5, 5]]
    # M-RoPE rows (t, h, w) of a prefix ending with image tokens: text resumes after the largest.
    mrope = torch.tensor([[[0, 1, 1, 1]], [[0, 1, 2, 2]], [[0, 1, 1, 2]]]).expand(3, 2, 4)
    assert _continuation(mrope, 2).tolist() == [[3, 3]] * 3
    # A leading text-position row continues on its own.
    text_row = torch.cat([torch.arange(4).view(1, 1, 4).expand(1, 2, 4), mrope])
    assert _continuation(text_row, 2).tolist() == [[4, 4]] + [[3, 3]] * 3
