"""Per-family facts only the tests check, keyed like lmms_probe_tasks.extract.families.FAMILIES.

The runtime table (:mod:`lmms_probe_tasks.extract.families`) holds what extraction
reads; these are what ``tests/test_families.py`` (and ``tests/test_tiny.py``) verify on
the tiny checkpoints: which builder makes each family, whether the real checkpoints ship
a chat template, whether ``processor.image_token`` is the config's image token, and
whether padding changes the pooled features.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Tolerance (max abs diff, float32) for "same features alone and in a batch".
BATCH_TOLERANCE = 1e-4


@dataclass(frozen=True)
class FamilyFacts:
    """What the tests check about one family (defaults: LLaVA-like).

    Attributes:
        tiny: Names of the :data:`lmms_probe_tasks.tiny.BUILDERS` that build this family.
        has_chat_template: Whether the real checkpoints ship a chat template.
        processor_image_token: ``processor.image_token`` is the token whose id is
            ``config.image_token_id`` (False: they differ, or the processor has none).
        batch_invariant: Right padding + the attention mask give the same ``last`` and
            ``mean`` features for a document alone or in a batch (within :data:`BATCH_TOLERANCE`).
        left_padding_ok: The same holds with left padding.
    """

    tiny: tuple[str, ...]
    has_chat_template: bool = True
    processor_image_token: bool = True
    batch_invariant: bool = True
    left_padding_ok: bool = True


FACTS: dict[str, FamilyFacts] = {
    "llava": FamilyFacts(tiny=("llava",)),
    "llava_next": FamilyFacts(tiny=("llava_next",)),
    "llava_next_video": FamilyFacts(tiny=("llava_next_video",)),
    "llava_onevision": FamilyFacts(tiny=("llava_onevision",)),
    "qwen2_vl": FamilyFacts(tiny=("qwen2_vl",)),
    "qwen2_5_vl": FamilyFacts(tiny=("qwen2_5_vl",)),
    "qwen3_vl": FamilyFacts(tiny=("qwen3_vl",)),
    "idefics3": FamilyFacts(tiny=("idefics3",)),
    "smolvlm": FamilyFacts(tiny=("smolvlm",)),
    # Real PaliGemma checkpoints have no chat template.
    "paligemma": FamilyFacts(tiny=("paligemma",), has_chat_template=False),
    # processor.image_token is the <start_of_image> tag; the features go into the
    # <image_soft_token> slots, whose id is config.image_token_id.
    "gemma3": FamilyFacts(tiny=("gemma3",), processor_image_token=False),
    "mllama": FamilyFacts(tiny=("mllama",)),
    # Kosmos2Processor has no image_token attribute (its "<image>" is a boundary tag), and
    # microsoft/kosmos-2-patch14-224 has no chat template.
    "kosmos-2": FamilyFacts(tiny=("kosmos2",), processor_image_token=False, has_chat_template=False),
    # No chat template in Salesforce/instructblip-vicuna-7b. The processor pads the text first
    # and then prepends the image tokens, so left padding puts pads between image and text
    # and shifts the text's positions.
    "instructblip": FamilyFacts(tiny=("instructblip",), has_chat_template=False, left_padding_ok=False),
    # As instructblip: pads would sit between the image tokens and the text.
    "instructblip+t5": FamilyFacts(tiny=("instructblip_t5",), has_chat_template=False, left_padding_ok=False),
}
