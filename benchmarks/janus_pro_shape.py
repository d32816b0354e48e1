"""A random policy of Janus-Pro-1B's shape, for the benchmarks that measure at real size (grpo_memory.py,
engine_speed.py --janus-pro-1b): the language model of Janus-Pro-1B (or a scaled-down one on a CPU, said so),
its vocabularies and its 576-token image, with a small vision tower and VQ that generation never leans on.

The tokenizer is a byte-level BPE with Janus-Pro's special tokens and chat template (tests/janus_pro_tiny.py),
trained on the reasoning instructions and the benchmark's prompts, so a prompt's context has about the length a
real tokenizer gives it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from janus_pro_tiny import IMAGE_TOKENS, ROLE_TOKENS, janus_pro_tokenizer  # noqa: E402

# Janus-Pro-1B's language model: the DeepSeek-LLM 1.3B shape (hidden 2048, 24 layers, 16 heads, vocab 102400), its
# MLP 5632 as transformers' DeepSeek-VL-1.3B converter writes it (not checked against the hub's config.json here).
JANUS_PRO_1B = {
    "hidden": 2048,
    "layers": 24,
    "heads": 16,
    "intermediate": 5632,
    "text_vocab": 102400,
    "image_tokens_side": 24,
    "image_vocab": 16384,
    "vq_embed_dim": 8,
    "max_positions": 16384,
}
CPU_DEFAULTS = {"hidden": 512, "layers": 8}
BPE_SIZE = 1000  # enough merges that the instruction's words are whole tokens, as in a real tokenizer


# -- the random Janus-Pro-shaped policy ---------------------------------------------------------------------------


def chat_tokenizer(text_vocab: int, prompts: list[str]):
    """tests/janus_pro_tiny.py's tokenizer (byte-level BPE, Janus-Pro's special tokens and chat format), trained
    on the chat format's reasoning instructions and `prompts` as well, at most `text_vocab` tokens in all."""
    from thinkdraw.policy.formats import INSTRUCTIONS

    added = 3 + len(IMAGE_TOKENS) + len(ROLE_TOKENS)  # bos, eos, pad, the image tokens, the roles
    size = min(BPE_SIZE, text_vocab - added)
    if size < 256:
        raise SystemExit(f"--text-vocab {text_vocab}: at least {256 + added} (the 256 bytes and the special tokens)")
    return janus_pro_tokenizer(list(INSTRUCTIONS.values()) + prompts, size, JANUS_PRO_1B["max_positions"])


def janus_config(args, tokenizer):
    """Janus-Pro-1B's layout at the chosen language-model shape; a one-layer vision tower and a small VQ (a
    48-pixel image from the side x side grid) with Janus-Pro's codebook (16384 codes of 8 dims)."""
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    text_config = LlamaConfig(
        vocab_size=args.text_vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,  # Janus-Pro-1B: no grouped-query attention
        max_position_embeddings=JANUS_PRO_1B["max_positions"],
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    side = args.image_tokens_side
    # JanusConfig sets the VQ's num_patches to image_size // patch_size of the vision tower.
    vision_config = JanusVisionConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=16 * side,
        patch_size=16,
        projection_dim=args.hidden,
        num_image_tokens=side * side,
    )
    vq_config = JanusVQVAEConfig(
        embed_dim=JANUS_PRO_1B["vq_embed_dim"],
        num_embeddings=JANUS_PRO_1B["image_vocab"],
        latent_channels=32,
        base_channels=32,
        channel_multiplier=[1, 1],
        num_res_blocks=1,
        num_patches=side,
        projection_dim=args.hidden,
        image_token_embed_dim=args.hidden,
    )
    return JanusConfig(
        text_config=text_config,
        vision_config=vision_config,
        vq_config=vq_config,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKENS["image_token"]),
        tie_word_embeddings=False,
    )


def resolve_shape(args) -> list[str]:
    """Fill the shape defaults for the device; what differs from Janus-Pro-1B, as lines to print."""
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cpu = args.device == "cpu"
    for name in ("hidden", "layers"):
        if getattr(args, name) is None:
            setattr(args, name, CPU_DEFAULTS[name] if cpu else JANUS_PRO_1B[name])
    if args.heads is None:  # Janus-Pro-1B's head width, 128
        args.heads = max(1, args.hidden // 128)
    if args.intermediate is None:  # Janus-Pro-1B's MLP ratio, 5632 / 2048
        args.intermediate = round(args.hidden * JANUS_PRO_1B["intermediate"] / JANUS_PRO_1B["hidden"])
    if args.hidden % args.heads:
        raise SystemExit(f"--hidden {args.hidden} is not a multiple of --heads {args.heads}")
    changed = [
        f"{name.replace('_', ' ')} {JANUS_PRO_1B[name]} -> {getattr(args, name)}"
        for name in ("hidden", "layers", "heads", "intermediate", "text_vocab", "image_tokens_side")
        if getattr(args, name) != JANUS_PRO_1B[name]
    ]
    return changed


def add_shape_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hidden", type=int, default=None, help="LM width (default: 2048 on a GPU, 512 on the CPU)")
    parser.add_argument("--layers", type=int, default=None, help="LM layers (default: 24 on a GPU, 8 on the CPU)")
    parser.add_argument("--heads", type=int, default=None, help="attention heads (default: hidden / 128)")
    parser.add_argument("--intermediate", type=int, default=None, help="MLP width (default: hidden * 5632 / 2048)")
    parser.add_argument("--text-vocab", type=int, default=JANUS_PRO_1B["text_vocab"])
    parser.add_argument("--image-tokens-side", type=int, default=JANUS_PRO_1B["image_tokens_side"])


def random_policy(args, prompts: list[str]):
    """The random Janus-Pro-shaped Policy (seed 0, float32, on the CPU) at the shape resolve_shape filled in."""
    from transformers import JanusForConditionalGeneration

    from thinkdraw.policy.model import Policy

    tokenizer = chat_tokenizer(args.text_vocab, prompts)
    torch.manual_seed(0)
    model = JanusForConditionalGeneration(janus_config(args, tokenizer)).eval()
    return Policy(model, tokenizer)
