"""A new user's Janus-Pro checkpoint, shrunk: a tiny random stand-in for a converted ``deepseek-community/Janus-Pro``.

Tests that load "somebody else's" Janus-Pro (``JanusForConditionalGeneration.from_pretrained`` plus
``AutoTokenizer.from_pretrained`` on one directory) need a checkpoint laid out exactly like the one transformers'
``convert_janus_weights_to_hf.py`` writes, without downloading gigabytes. This module builds one in well under a
second: a Llama 2 x 64 language model with an untied head, a one-layer SigLIP-like vision tower, and a Janus-Pro-like
VQ (no patch-local variant) that decodes a 4x4 token grid into 32x32 pixels. The tokenizer is a real byte-level BPE
trained in memory (any text encodes, there is no unk token), declaring the DeepSeek special tokens and the named
``image_token`` / ``boi_token`` / ``eoi_token`` that ``JanusProcessor`` reads, with a short chat template of its own.
The weights are random; only the shapes, names and tokenizer conventions are Janus-Pro's.
"""

from __future__ import annotations

import pathlib

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    JanusConfig,
    JanusForConditionalGeneration,
    JanusVisionConfig,
    JanusVQVAEConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
)

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
IMAGE_TOKENS = {"image_token": "<image_placeholder>", "boi_token": "<begin_of_image>", "eoi_token": "<end_of_image>"}
ROLE_TOKENS = ["<|User|>", "<|Assistant|>"]

# Janus-Pro's conversation format: "<|User|>: ...\n\n<|Assistant|>: ...<eos>"; bos comes from the tokenizer itself.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{ '<|User|>: ' + message['content'] + '\\n\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ '<|Assistant|>: ' + message['content'] + eos_token }}"
    "{%- else -%}"
    "{{ message['content'] + '\\n\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|Assistant|>:' }}{%- endif -%}"
)

_OBJECTS = ["teddy bear", "cup", "box", "ball", "chair", "apple", "book", "lamp", "cat", "dog", "car", "kite"]
_COLOURS = ["red", "green", "blue", "yellow", "white", "black", "orange", "purple"]
_CORPUS = [
    "a photo of a red teddy bear on a wooden table",
    "red teddy bear (112,40),(540,610)",
    "blue box (10,20),(200,180) and green ball (300,310),(420,460)",
    "draw a small yellow cup to the left of a large black box",
    "the white cat sits in front of the orange chair",
    "two purple apples are inside the box, one green book is next to it",
    "<|User|>: a picture of a dog and a kite\n\n<|Assistant|>: dog (0,0),(256,256)",
    "<|User|>: where is the lamp?\n\n<|Assistant|>: The lamp is above the table.",
    "Think about the layout first: boxes, colours, sizes, then draw the image.",
    "A tall blue lamp (64,8),(128,500) stands behind a short red chair.",
]
_CORPUS += [
    f"a {colour} {thing} ({11 * i},{7 * i}),({100 + 13 * i},{90 + 17 * i})"
    for i, (colour, thing) in enumerate(zip(_COLOURS * 3, _OBJECTS * 2, strict=True))
]


def janus_pro_tokenizer(
    extra_text: list[str] = (), vocab_size: int = 400, max_length: int = 16384
) -> PreTrainedTokenizerFast:
    """A byte-level BPE of `vocab_size` merges and bytes (trained on a small corpus and `extra_text`), declaring
    the special tokens the way a converted Janus-Pro does, with Janus-Pro's chat format."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    backend.train_from_iterator(_CORPUS + list(extra_text), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=dict(IMAGE_TOKENS),
        add_bos_token=True,
        add_eos_token=False,
        model_max_length=max_length,
        chat_template=CHAT_TEMPLATE,
    )
    tokenizer.add_tokens(ROLE_TOKENS)
    return tokenizer


def _tiny_config(tokenizer: PreTrainedTokenizerFast) -> JanusConfig:
    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # 32x32 pixels in 8x8 patches: a 4x4 grid, which JanusConfig copies into the VQ's num_patches.
    vision_config = JanusVisionConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=64,
        num_image_tokens=16,
    )
    # Four resolution levels (three downsamplings): a 4x4 token grid decodes to 32x32 pixels.
    vq_config = JanusVQVAEConfig(
        embed_dim=8,
        num_embeddings=64,
        latent_channels=32,
        base_channels=32,
        channel_multiplier=[1, 1, 2, 2],
        num_res_blocks=2,
        num_patches=4,
        projection_dim=64,
        image_token_embed_dim=64,
    )
    return JanusConfig(
        text_config=text_config,
        vision_config=vision_config,
        vq_config=vq_config,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKENS["image_token"]),
        tie_word_embeddings=False,
    )


def save_tiny_janus_pro(directory: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Write a tiny random Janus-Pro (safetensors weights, config, tokenizer) into ``directory`` and return it."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = janus_pro_tokenizer()
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(_tiny_config(tokenizer)).eval()
    # boi_token_id as the convert script sets it; generate(generation_mode="image") reads it from generation_kwargs.
    # (GenerationConfig.from_pretrained in transformers 5.24 drops both keys on load; they are still in the file.)
    boi_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKENS["boi_token"])
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.boi_token_id = boi_token_id
    model.generation_config.generation_kwargs = {"boi_token_id": boi_token_id}
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
