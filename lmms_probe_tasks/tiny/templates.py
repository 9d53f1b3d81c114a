"""The Jinja chat templates of the tiny checkpoints, one per family that ships one in its real checkpoints."""

from __future__ import annotations

# PaliGemma, Kosmos-2 and InstructBLIP have no template: their real checkpoints have none.

# LLaVA-1.5 turns: a system message is written as-is; every other turn as
# "ROLE: " + its media + its text, each followed by a space.
_LLAVA_TURN_START = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- if message['content'] is string -%}{{ message['content'] + ' ' }}"
    "{%- else -%}{%- for part in message['content'] if part['type'] == 'text' -%}{{ part['text'] + ' ' }}{%- endfor -%}"
    "{%- endif -%}"
    "{%- else -%}"
    "{{ message['role'].upper() + ': ' }}"
    "{%- if message['content'] is string -%}{{ message['content'] + ' ' }}"
    "{%- else -%}"
)
_LLAVA_TURN_END = (
    "{%- for part in message['content'] if part['type'] == 'text' -%}{{ part['text'] + ' ' }}{%- endfor -%}"
    "{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)


def _llava_media(kind: str) -> str:
    """The LLaVA-1.5 loop writing one ``<kind>`` line per ``{"type": kind}`` part of a turn.

    Args:
        kind: The content part type, ``"image"`` or ``"video"``.

    Returns:
        A Jinja fragment.
    """
    return (
        "{%- for part in message['content'] if part['type'] == '" + kind + "' -%}{{ '<" + kind + ">\n' }}{%- endfor -%}"
    )


#: LLaVA-1.5 prompt format ("USER: <image>\n{text} ASSISTANT:"). Content may be a plain
#: string or a list of {"type": "image"} / {"type": "text", "text": ...} parts; images
#: are rendered before the text, as in the llava-hf checkpoints.
LLAVA_CHAT_TEMPLATE = _LLAVA_TURN_START + _llava_media("image") + _LLAVA_TURN_END

#: LLaVA-NeXT-Video's "USER: <image>\n{text} ASSISTANT:" layout (videos as <video>, after the images).
LLAVA_NEXT_VIDEO_CHAT_TEMPLATE = _LLAVA_TURN_START + _llava_media("image") + _llava_media("video") + _LLAVA_TURN_END

#: Layout of the llava-hf LLaVA-OneVision template: images, then videos, then the text
#: of each turn ("<|im_start|>user <image>\n{text}<|im_end|>"), generation prompt
#: "<|im_start|>assistant\n".
LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: The Qwen2-VL-Instruct chat template (default system prompt, ChatML turns, one
#: <|vision_start|><|image_pad|><|vision_end|> block per image, expanded by the processor).
#: Qwen2.5-VL-Instruct ships the same template.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: Qwen3-VL-Instruct layout: ChatML without a default system prompt; images as
#: <|vision_start|><|image_pad|><|vision_end|>.
QWEN3_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Idefics3 / SmolVLM turns: "User:<image>{text}<end_of_utterance>\nAssistant:" (":" with
# no space when the turn opens with an image), after the family's BOS.
_IDEFICS3_TURNS = (
    "{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{ line['text'] }}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
#: Idefics3 layout, opened by the Llama-3 BOS.
IDEFICS3_CHAT_TEMPLATE = "<|begin_of_text|>" + _IDEFICS3_TURNS
#: SmolVLM layout, opened by the SmolLM2 BOS.
SMOLVLM_CHAT_TEMPLATE = "<|im_start|>" + _IDEFICS3_TURNS

#: Gemma 3 instruct layout: "<bos><start_of_turn>user\n<start_of_image>{text}<end_of_turn>\n"
#: then "<start_of_turn>model\n"; the processor expands <start_of_image> into
#: "\n\n<start_of_image>" + <image_soft_token> x 4 + "<end_of_image>\n\n".
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

#: Llama 3.2 Vision instruct layout (images first in the turn, no default system prompt).
MLLAMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<|image|>' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
