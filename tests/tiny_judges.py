"""Tiny random judges saved as checkpoint folders (model + processor), built offline in well under a second.

LLaVA comes from thinkdraw.judges.vlm.new_llava_judge, the builder of the shipped world judge. Qwen2.5-VL is
built here: its own model classes and image processor, Qwen's special tokens and chat layout, over the same
word tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    AutoProcessor,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessorPil,
)
from transformers.processing_utils import ProcessorMixin
from transformers.utils import is_torchvision_available

from thinkdraw.judges.vlm import ANSWER_WORDS, VLMChat, new_llava_judge, prompt_words, word_tokenizer

WORDS = ("red", "green", "blue", "circle", "square", "triangle", "left", "right", "of", "a", "two")

QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<unk>",
)
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class Qwen2_5_VLImageProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL's processor for images only.

    transformers 5.25 builds Qwen2_5_VLProcessor only with a video processor, and a video processor only with
    torchvision, which thinkdraw does not install. A judge reads images, so without torchvision the tests
    register this subclass (it takes no video processor) for Qwen2.5-VL checkpoints."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


if not is_torchvision_available():
    AutoProcessor.register(Qwen2_5_VLConfig, Qwen2_5_VLImageProcessor, exist_ok=True)


def tiny_llava_judge(words: Sequence[str] = WORDS, seed: int = 0) -> VLMChat:
    """LLaVA: a CLIP tower (64 px images, 8 px patches, 32 wide, 2 layers; 64 image tokens), Llama 64 x 2."""
    return new_llava_judge(words, image_size=64, patch=8, hidden=64, layers=2, seed=seed)


def save_tiny_llava_judge(path: str | Path, words: Sequence[str] = WORDS, seed: int = 0) -> Path:
    return tiny_llava_judge(words, seed).save(path)


def tiny_qwen_judge(words: Sequence[str] = WORDS, seed: int = 0) -> VLMChat:
    """Qwen2.5-VL: text 64 wide x 2 layers (mrope sections 2+3+3 of head 16), a 2-block vision tower 32 wide on
    8 px patches merged 2x2; images become 32-48 px a side, 4 to 9 image tokens."""
    roles = {"pad_token": "<|endoftext|>", "unk_token": "<unk>", "eos_token": "<|im_end|>"}
    tokenizer = word_tokenizer([*prompt_words(), *ANSWER_WORDS, "user", "assistant", *words], QWEN_SPECIALS, **roles)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIALS}
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 8,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 32,  # 2x2 merged patches a window: the first block attends in windows, the last fully
            "out_hidden_size": 64,
            "fullatt_block_indexes": [1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=8, merge_size=2, temporal_patch_size=2, min_pixels=32 * 32, max_pixels=48 * 48
    )
    if is_torchvision_available():
        from transformers import Qwen2VLVideoProcessor

        video_processor = Qwen2VLVideoProcessor(patch_size=8, merge_size=2, temporal_patch_size=2)
        processor = Qwen2_5_VLProcessor(image_processor, tokenizer, video_processor, chat_template=QWEN_TEMPLATE)
    else:
        processor = Qwen2_5_VLImageProcessor(image_processor, tokenizer, chat_template=QWEN_TEMPLATE)
    return VLMChat(model, processor)


def save_tiny_qwen_judge(path: str | Path, words: Sequence[str] = WORDS, seed: int = 0) -> Path:
    return tiny_qwen_judge(words, seed).save(path)
