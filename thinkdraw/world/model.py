"""The shapes world's model parts: its word-level tokenizer, its small Janus config and VQ, their initialisation.

Everything here is world-specific and plugs into the generic policy (`thinkdraw.policy`): the
checkpoints it builds are standard `JanusForConditionalGeneration` folders with a tokenizer that
declares its special tokens by name (bos, pad, `boi_token`, `eoi_token`, `think_token`), so the
generic Policy reads them as it reads Janus-Pro's.

The tokenizer has one token per word, number or punctuation mark: every word of every prompt the
generator can write, the plan's words, the grid numbers 0-1000 (a planned box costs nine tokens,
not twenty). Sequences:
    [bos] prompt [boi] image                      draw directly
    [bos] prompt [think] plan [boi] image         think first: the plan ends when the model writes [boi]

Image positions. A world tokenizer also holds one token per image-token position, `<img_pos_0>` ...
`<img_pos_{N-1}>`, never written in text: their embedding rows are the world model's learned 2-D position
table, which the engine adds to image-token inputs (see `thinkdraw.engine.sampling`). They live in the
text embedding so that a standard Janus checkpoint carries them; Janus-Pro has none and draws unchanged.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    JanusConfig,
    JanusForConditionalGeneration,
    JanusVQVAE,
    JanusVQVAEConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
)

from thinkdraw.plan import GRID
from thinkdraw.policy.layout import layout_token_names
from thinkdraw.policy.model import Policy
from thinkdraw.policy.vq import patch_latents, patchify, to_pixels
from thinkdraw.world import prompts as world_prompts
from thinkdraw.world.layout import random_layout
from thinkdraw.world.render import render
from thinkdraw.world.spec import CANVAS, COLORS, NUMBERS, PLURALS, RELATIONS, SHAPES

PAD, BOS, EOS, UNK, BOI, EOI, THINK = "<pad>", "<bos>", "<eos>", "<unk>", "<boi>", "<eoi>", "<think>"
SPECIALS = (PAD, BOS, EOS, UNK, BOI, EOI, THINK)
RATIONALE = "<rationale>"
REVISE, FEEDBACK = "<revise>", "<feedback>"  # a second try: the earlier plan follows, then what was wrong
REVISION_WORDS = ("there", "is", "are", "not", "too")  # the world judge's feedback words the prompts lack
_PRE = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")])


def world_words() -> list[str]:
    """Every word the prompt generator and the plan format can write, sorted."""
    texts = ["a an photo of and the colour", " ".join(SHAPES), " ".join(PLURALS.values()), " ".join(COLORS)]
    texts += list(NUMBERS.values()) + list(RELATIONS)
    texts += list(world_prompts.COLOR_OF_THING)
    texts += [p for pair in world_prompts.SHAPE_BY_PROPERTY.values() for p in pair]
    texts += [t.format(n="") for forms in world_prompts.COUNT_BY_FACT.values() for t in forms]
    texts += [str(i) for i in range(GRID + 1)] + ["( ) , ;"]
    words = {w for text in texts for w, _ in _PRE.pre_tokenize_str(text)}
    return sorted(words)


def image_position_token(k: int) -> str:
    return f"<img_pos_{k}>"


def build_tokenizer(image_positions: int = 0, layout: bool = False, revise: bool = False) -> PreTrainedTokenizerFast:
    """The world tokenizer; `image_positions` position tokens (one per image token) after the words, then, with
    `layout`, the layout tokens of plan-guided positions (`thinkdraw.policy.layout`) for 64 px images in
    square patches, one per position token, and the rationale token (ReasonGen-R1's written rationale follows
    it, as a plan follows the think token); with `revise` (needs layout), the revise and feedback tokens of a
    second try and the feedback's words (REVISION_WORDS). Later additions come last, so older ids never change."""
    vocab = {token: i for i, token in enumerate(SPECIALS)}
    for word in world_words():
        vocab.setdefault(word, len(vocab))
    positions = [image_position_token(k) for k in range(image_positions)]
    if layout:
        positions += layout_token_names(CANVAS, CANVAS // math.isqrt(image_positions))
    for token in positions:
        vocab[token] = len(vocab)
    named = {"boi_token": BOI, "eoi_token": EOI, "think_token": THINK}
    if layout:
        vocab[RATIONALE] = len(vocab)
        named["rationale_token"] = RATIONALE
    if revise:
        if not layout:
            raise ValueError("revise tokens come after the layout tokens: build with layout=True")
        for token in (REVISE, FEEDBACK, *REVISION_WORDS):
            vocab[token] = len(vocab)
        named |= {"revise_token": REVISE, "feedback_token": FEEDBACK}
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = _PRE
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        extra_special_tokens=named,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": positions})  # already in the vocab: ids unchanged
    return tokenizer


def world_policy_config(vocab_size: int, vq: JanusVQVAE, hidden: int = 192, layers: int = 6) -> JanusConfig:
    """A small Janus for the shapes world: a Llama of `layers` x `hidden`, the world VQ, a token-sized
    understanding encoder (drawing never uses it, but JanusModel always builds one)."""
    grid = vq.config.num_patches
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3 // 32 * 32,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 32,
        num_key_value_heads=max(1, hidden // 96),
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    vision = {
        "image_size": grid * 8,
        "patch_size": 8,
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 1,
        "mlp_ratio": 1.0,
        "projection_dim": hidden,
        "num_image_tokens": grid * grid,
    }
    vq_config = vq.config.to_dict()
    vq_config.update(projection_dim=hidden, image_token_embed_dim=hidden)
    return JanusConfig(text_config=text.to_dict(), vision_config=vision, vq_config=vq_config)


def new_world_policy(vq: JanusVQVAE, hidden: int = 192, layers: int = 6, seed: int = 0, layout: bool = True) -> Policy:
    """An untrained world policy around a trained VQ (the start of `thinkdraw train base`); `layout`: with the
    layout tokens of plan-guided positions."""
    grid = vq.config.num_patches
    tokenizer = build_tokenizer(image_positions=grid * grid, layout=layout)
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(world_policy_config(len(tokenizer), vq, hidden, layers))
    model.model.vqmodel.load_state_dict(vq.state_dict(), strict=True)
    policy = Policy(model, tokenizer)
    init_coordinates(policy, grid)
    return policy


def with_layout(policy: Policy) -> Policy:
    """A world policy given plan-guided positions and a rationale token: those tokens appended to its tokenizer
    and embedding (new rows; every other row and id unchanged). A policy that has them is returned as it is."""
    return policy if policy.layout is not None else _grown(policy, revise=False)


def with_revision(policy: Policy) -> Policy:
    """A world policy (with layout tokens) given the tokens of a second try (PARM++): <revise>, <feedback> and
    the feedback's words, appended (new rows; every other row and id unchanged). One that has them is returned
    as it is."""
    if policy.format.name == "plain" and policy.format.revise is not None:
        return policy
    return _grown(policy, revise=True)


def _grown(policy: Policy, revise: bool) -> Policy:
    """The policy with the world tokenizer of layout (and revise) tokens; its old ids must be the world's."""
    grid = policy.model.model.vqmodel.config.num_patches
    tokenizer = build_tokenizer(image_positions=grid * grid, layout=True, revise=revise)
    old = policy.tokenizer.get_vocab()
    if any(tokenizer.get_vocab().get(token) != index for token, index in old.items()):
        raise ValueError("not a world tokenizer: its ids differ from the world's")
    torch.manual_seed(0)
    policy.model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return Policy(policy.model, tokenizer)


def waves(x: torch.Tensor, periods: tuple[float, ...]) -> torch.Tensor:
    """[n] -> [n, 2 * len(periods)]: sin and cos of x at each period."""
    angles = 2 * torch.pi * x[:, None] / torch.tensor(periods)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


COORDINATE_PERIODS = (2.0, 4.0, 8.0, 16.0, 32.0)  # in image tokens


def init_coordinates(policy: Policy, grid: int, amplitude: float = 0.1) -> None:
    """Start the embeddings of places with their geometry, so that a plan's box can be matched with the
    image token being drawn: position token k, whose top-left corner is (c, r) in tokens, gets waves(c) in
    the first block of dimensions and waves(r) in the second; grid number n gets waves(n / GRID * grid)
    in both (a number is an x or a y by its place in the box). Added to the random init; training moves
    them freely."""
    embed = policy.model.model.language_model.get_input_embeddings().weight
    width = 2 * len(COORDINATE_PERIODS)
    index = torch.arange(grid * grid, dtype=torch.float32)
    rows, cols = index // grid, index % grid  # a token's top-left corner, in tokens (a number v: v * grid / GRID)
    numbers = torch.arange(GRID + 1, dtype=torch.float32)
    number_ids = policy.tokenizer.convert_tokens_to_ids([str(int(n)) for n in numbers])
    at = waves(numbers / GRID * grid, COORDINATE_PERIODS)
    with torch.no_grad():
        positions = list(policy.special.image_positions)
        embed[positions, :width] += amplitude * waves(cols, COORDINATE_PERIODS)
        embed[positions, width : 2 * width] += amplitude * waves(rows, COORDINATE_PERIODS)
        embed[number_ids, :width] += amplitude * at
        embed[number_ids, width : 2 * width] += amplitude * at


def world_vq_config(codebook: int = 4096, grid: int = 16) -> JanusVQVAEConfig:
    """A small patch-local VQ for 64x64 world images: `grid` x `grid` tokens, one per (64 / grid)-pixel patch.

    16 (4x4 patches) is the world default: with 8x8 patches, 1024 codes cannot hold the corners of
    12-pixel shapes, and the exact detector misreads a third of the objects after a round trip. Rendered
    scenes hold about 4200 distinct 4x4 patches (the most common 4096 cover 99.98% of patches), hence 4096
    codes. At its random initialisation this encoder gives the 4223 distinct patches of 3000 scenes 4223
    distinct unit outputs (the closest pair at cosine 0.99998)."""
    levels = {8: 4, 16: 3}[grid]  # downsampling is 2 ** (levels - 1)
    return JanusVQVAEConfig(
        embed_dim=16,
        num_embeddings=codebook,
        latent_channels=64,
        base_channels=32,  # the minimum: every norm is GroupNorm(32)
        channel_multiplier=[1, 2, 2, 2][:levels],
        num_res_blocks=1,
        num_patches=grid,
        projection_dim=128,  # overwritten by the policy config to the LM width
        image_token_embed_dim=128,
        patch_local=True,
    )


@torch.no_grad()
def init_codebook(vq: JanusVQVAE, scenes: int = 3000, seed: int = 0) -> dict:
    """Set the codebook to the unit-norm encoder outputs of the most common distinct patches of `scenes`
    random world scenes (1 to 8 objects); unit rows make transformers' raw-distance lookup the cosine one.
    Codes beyond the distinct patches get random unit rows. Returns {"patches", "covered"}: how many
    distinct patches were seen and the share of patch occurrences whose patch has its own code."""
    rng = random.Random(seed)
    images = np.stack([render(random_layout(rng, rng.randint(1, 8))) for _ in range(scenes)])
    patches = patchify(to_pixels(images), vq.config.num_patches)  # [S*n*n, 3, p, p]
    counts = Counter(map(bytes, patches.flatten(1).numpy()))
    K = vq.config.num_embeddings
    common = [key for key, _ in counts.most_common(K)]
    chosen = torch.from_numpy(np.frombuffer(b"".join(common), dtype=np.float32).copy())
    was_training = vq.training
    vq.eval()
    rows = F.normalize(torch.randn(K, vq.config.embed_dim, generator=torch.Generator().manual_seed(seed)), dim=1)
    rows[: len(common)] = F.normalize(patch_latents(vq, chosen.view(len(common), *patches.shape[1:])), dim=1)
    vq.quantize.embedding.weight.copy_(rows)
    vq.train(was_training)
    covered = sum(counts[key] for key in common) / patches.shape[0]
    return {"patches": len(counts), "covered": covered}
