"""The doc functions a probe task's YAML names: a document's image, prompt text and target."""

from __future__ import annotations

from lmms_probe_tasks.data.images import to_rgb


def doc_to_visual(doc: dict) -> list:
    """Return the document's image as a one-element list of upright 8-bit RGB PIL images.

    Args:
        doc: One document (column ``image``: a PIL image).
    """
    return [to_rgb(doc["image"])]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """Fill the task's prompt template (``lmms_eval_specific_kwargs.prompt``) with the doc's ``text``.

    Args:
        doc: One document (column ``text``).
        lmms_eval_specific_kwargs: The task's per-model settings; ``prompt`` defaults to ``{text}``.

    Returns:
        The prompt text (the model wrapper adds the image and the chat layout).
    """
    template = (lmms_eval_specific_kwargs or {}).get("prompt", "{text}")
    return template.format(text=doc.get("text", ""))


def doc_to_target(doc: dict) -> str:
    """Return the gold label as text (only for ``--log_samples``).

    Args:
        doc: One document (column ``label`` or ``labels``).
    """
    return str(doc.get("label", doc.get("labels", "")))
