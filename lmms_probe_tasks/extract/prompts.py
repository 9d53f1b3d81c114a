"""Lays out what one document is run with: the ONE prompt builder, and the blind-mode images.

Every caller (the ``hidden_states`` wrapper, the tiny checkpoints' smoke check, the
tests) builds prompts with :func:`build_prompt`, so the layout a test verifies is the
layout users get:

* ``chat_template`` families: the processor's chat template, one image part per image
  before the text, ``add_generation_prompt=True``; when the processor has no chat
  template, :data:`FALLBACK_LAYOUT` (the LLaVA-1.5 convention: the image token on its own
  line, then the text);
* ``image_tokens_then_text`` (PaliGemma): ``processor.image_token`` once per image, then
  the text, with no separator (the processor adds ``<bos>`` and the final newline);
* ``text`` (Kosmos-2, InstructBLIP): the bare text (the processor writes the image slots).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmms_probe_tasks.extract.families import Family

#: Prompt layout used when a chat-template family's processor has no chat template: the
#: image tokens (space-separated, one per image) on their own line, then the task's text.
FALLBACK_LAYOUT = "{image_tokens}\n{text}"
#: ``processor.image_token`` when the processor has none.
DEFAULT_IMAGE_TOKEN = "<image>"
BLINDS: tuple[str, ...] = ("none", "blank", "noimage")


def build_prompt(processor: Any, family: Family, text: str, n_images: int = 1) -> str:
    """Lay out one document's prompt the way the family expects.

    Args:
        processor: The checkpoint's processor.
        family: Its :class:`~lmms_probe_tasks.extract.families.Family`.
        text: The task's text.
        n_images: Images of the document (placed before the text; 0 for ``blind=noimage``).

    Returns:
        The prompt string to pass to ``processor(text=...)``, ending where the answer would begin.

    Raises:
        ValueError: ``family.prompt`` is not a known layout.
    """
    if family.prompt == "text":
        return text
    image_token = getattr(processor, "image_token", None) or DEFAULT_IMAGE_TOKEN
    if family.prompt == "image_tokens_then_text":
        return image_token * n_images + text
    if family.prompt != "chat_template":
        raise ValueError(f"family prompt {family.prompt!r} is not one of chat_template, text, image_tokens_then_text")
    if getattr(processor, "chat_template", None):
        content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": text}]
        return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    if not n_images:
        return text
    return FALLBACK_LAYOUT.format(image_tokens=" ".join([image_token] * n_images), text=text)


def prompt_format(processor: Any, family: Family) -> str:
    """Describe, for the result artifacts, which layout :func:`build_prompt` uses for this checkpoint.

    Args:
        processor: The checkpoint's processor.
        family: Its :class:`~lmms_probe_tasks.extract.families.Family`.

    Returns:
        ``chat_template``, ``fallback: `` + :data:`FALLBACK_LAYOUT`, or a short description.
    """
    if family.prompt == "chat_template":
        return "chat_template" if getattr(processor, "chat_template", None) else "fallback: " + FALLBACK_LAYOUT
    if family.prompt == "text":
        return "bare text (the processor inserts the image slots)"
    return "image token(s) then text"


def blind_images(images: list[list[Any]], blind: str) -> list[list[Any]]:
    """Apply the ``blind`` baseline to a batch's images.

    Args:
        images: One list of PIL images per document.
        blind: ``none`` (unchanged), ``blank`` (each image replaced by a mid-grey one of the
            same size) or ``noimage`` (no image at all).

    Returns:
        The images each document is run with.
    """
    if blind == "noimage":
        return [[] for _ in images]
    if blind == "blank":
        from PIL import Image

        return [[Image.new("RGB", im.size, (128, 128, 128)) for im in per_doc] for per_doc in images]
    return images
