"""The Policy: one think-then-draw model on transformers' JanusForConditionalGeneration.

The shapes-world model is a small Janus config trained here; Janus-Pro-1B/7B load through
the same class (`Policy.load("deepseek-community/Janus-Pro-1B")` with the weights at hand).
Everything the methods need goes through this interface:

    think(prompts)                -> plans (text)
    draw(prompts, plans)          -> image tokens drawn after the given plans
    generate(prompts, think, ...) -> candidates: plan, image tokens, image, log-probs
    logprobs(...)                 -> teacher-forced log-probs (differentiable) for trainers
    decode(tokens) / decode_partial(tokens, step)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoTokenizer, JanusConfig, JanusForConditionalGeneration, JanusVQVAE, LlamaConfig

from thinkdraw.checkpoint import CheckpointError, load_model
from thinkdraw.engine.sampling import Rollout, SamplingSettings, SpecialIds, generate, teacher_forced_logprobs
from thinkdraw.errors import ThinkdrawError
from thinkdraw.policy.text import TextIds, build_tokenizer, decode_text, encode_prompt
from thinkdraw.policy.vq import decode_tokens, encode_images
from thinkdraw.world.render import render_image
from thinkdraw.world.spec import PLAN_GRID


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


def new_world_policy(vq: JanusVQVAE, hidden: int = 192, layers: int = 6, seed: int = 0) -> Policy:
    """An untrained world policy around a trained VQ (the start of `thinkdraw train base`)."""
    grid = vq.config.num_patches
    tokenizer = build_tokenizer(image_positions=grid * grid)
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(world_policy_config(len(tokenizer), vq, hidden, layers))
    model.model.vqmodel.load_state_dict(vq.state_dict(), strict=True)
    policy = Policy(model, tokenizer)
    init_coordinates(policy, grid)
    return policy


def waves(x: torch.Tensor, periods: tuple[float, ...]) -> torch.Tensor:
    """[n] -> [n, 2 * len(periods)]: sin and cos of x at each period."""
    angles = 2 * torch.pi * x[:, None] / torch.tensor(periods)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


COORDINATE_PERIODS = (2.0, 4.0, 8.0, 16.0, 32.0)  # in image tokens


def init_coordinates(policy: Policy, grid: int, amplitude: float = 0.1) -> None:
    """Start the embeddings of places with their geometry, so that a plan's box can be matched with the
    image token being drawn: position token k, whose top-left corner is (c, r) in tokens, gets waves(c) in
    the first block of dimensions and waves(r) in the second; grid number n gets waves(n / PLAN_GRID * grid)
    in both (a number is an x or a y by its place in the box). Added to the random init; training moves
    them freely."""
    embed = policy.model.model.language_model.get_input_embeddings().weight
    width = 2 * len(COORDINATE_PERIODS)
    index = torch.arange(grid * grid, dtype=torch.float32)
    rows, cols = index // grid, index % grid  # a token's top-left corner, in tokens (a number v: v * grid / PLAN_GRID)
    numbers = torch.arange(PLAN_GRID + 1, dtype=torch.float32)
    number_ids = policy.tokenizer.convert_tokens_to_ids([str(int(n)) for n in numbers])
    at = waves(numbers / PLAN_GRID * grid, COORDINATE_PERIODS)
    with torch.no_grad():
        positions = list(policy.special.image_positions)
        embed[positions, :width] += amplitude * waves(cols, COORDINATE_PERIODS)
        embed[positions, width : 2 * width] += amplitude * waves(rows, COORDINATE_PERIODS)
        embed[number_ids, :width] += amplitude * at
        embed[number_ids, width : 2 * width] += amplitude * at


def untie_text_head(model: JanusForConditionalGeneration) -> bool:
    """Give the text head weights of its own (a copy of the input embedding); True when it was tied.

    The world base policy is built tied (it never writes text, so a second matrix would only be weight to
    ship). SFT unties it before its first step: with one matrix, the rows of words the plan must copy but
    cannot yet predict (a colour it does not know) are pulled together as outputs until the words no
    longer differ as inputs either; in a tied SFT run the ten colour rows ended at cosine 0.86 and the
    plan never learned to copy a colour. Janus-Pro's text head is untied already."""
    embed = model.model.language_model.get_input_embeddings()
    if model.lm_head.weight is not embed.weight:
        return False
    model.config.tie_word_embeddings = False
    model.config.text_config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(embed.weight.detach().clone())
    return True


@dataclass
class Candidate:
    prompt: str
    plan: str | None  # the plan text; None when drawn without thinking
    image_tokens: torch.Tensor  # [N]
    image: Image.Image
    plan_logprobs: torch.Tensor  # [plan tokens (+ boi when sampled)]
    image_logprobs: torch.Tensor  # [N]
    plan_ids: list[int]  # the plan's tokens ([] without thinking): with boi_sampled, what logprobs() takes
    boi_sampled: bool  # whether the plan ended by sampling [boi] (not by the length cap)


class Policy:
    def __init__(self, model: JanusForConditionalGeneration, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.ids = TextIds.of(tokenizer)
        self.num_image_tokens = model.config.vision_config.num_image_tokens
        positions = self.ids.image_positions
        if positions is not None and len(positions) != self.num_image_tokens:
            raise CheckpointError(
                f"the tokenizer has {len(positions)} image-position tokens; the model draws {self.num_image_tokens}"
            )
        self.special = SpecialIds(pad=self.ids.pad, bos=self.ids.bos, boi=self.ids.boi, image_positions=positions)
        self._blank: int | None = None

    @classmethod
    def load(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> Policy:
        """A local checkpoint directory or a hub id (model and tokenizer together)."""
        model = load_model(JanusForConditionalGeneration, path, dtype=dtype)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{path}: cannot load the tokenizer ({str(err).splitlines()[0]})") from None
        model.eval()
        return cls(model, tokenizer)

    def save(self, path: str | Path) -> None:
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # -- text ------------------------------------------------------------------------------

    def encode(self, prompt: str, think: bool) -> list[int]:
        """[bos] prompt (+ [think]): the context a row starts from."""
        ids = encode_prompt(self.tokenizer, prompt)
        return ids + [self.ids.think] if think else ids

    def plan_ids(self, plan: str) -> list[int]:
        ids = self.tokenizer(plan, add_special_tokens=False)["input_ids"]
        if self.ids.unk in ids:
            raise ThinkdrawError(f"the plan has words the model does not know: {plan!r}")
        return ids

    # -- sampling --------------------------------------------------------------------------

    def _rollout(
        self,
        prompts: list[str],
        think: bool,
        seed: int,
        settings: SamplingSettings,
        plans: list[str] | None = None,
        on_image_step=None,
        row_ids: list[int] | None = None,
    ) -> Rollout:
        """Row i samples from its own generator, seeded by (seed, row_ids[i]) (default: i)."""
        contexts = [self.encode(p, think) for p in prompts]
        plan_ids = [self.plan_ids(p) for p in plans] if plans is not None else None
        row_ids = range(len(prompts)) if row_ids is None else row_ids
        generators = [torch.Generator().manual_seed(seed * 1_000_003 + i) for i in row_ids]
        with torch.no_grad():
            return generate(
                self.model,
                contexts,
                self.special,
                settings,
                generators,
                think=think,
                num_image_tokens=self.num_image_tokens,
                plan_ids=plan_ids,
                on_image_step=on_image_step,
            )

    def think(self, prompts: list[str], seed: int = 0, settings: SamplingSettings | None = None) -> list[str]:
        """Plans only (the image is drawn too: a plan's end is the model's choice to start drawing)."""
        return [c.plan for c in self.generate(prompts, think=True, seed=seed, settings=settings)]

    def draw(
        self, prompts: list[str], plans: list[str], seed: int = 0, settings: SamplingSettings | None = None
    ) -> torch.Tensor:
        """Image tokens [B, N] drawn after the given plans."""
        rollout = self._rollout(prompts, True, seed, settings or SamplingSettings(), plans=plans)
        return rollout.image_ids

    def generate(
        self,
        prompts: list[str],
        think: bool = True,
        n: int = 1,
        seed: int = 0,
        settings: SamplingSettings | None = None,
        on_image_step=None,
        indices: list[int] | None = None,
    ) -> list[Candidate]:
        """n candidates per prompt, in prompt order (prompt 0's n candidates first).

        Candidate j of prompt k is seeded by (seed, indices[k] * n + j); `indices` (default 0, 1, ...) are the
        prompts' places in a larger run, so that a prompt's candidates do not depend on how the run is batched."""
        indices = range(len(prompts)) if indices is None else indices
        rows = [p for p in prompts for _ in range(n)]
        row_ids = [k * n + j for k in indices for j in range(n)]
        rollout = self._rollout(
            rows, think, seed, settings or SamplingSettings(), on_image_step=on_image_step, row_ids=row_ids
        )
        images = self.decode(rollout.image_ids)
        boi_sampled = rollout.boi_sampled
        return [
            Candidate(
                prompt=row,
                plan=decode_text(self.tokenizer, rollout.think_ids[i]) if think else None,
                image_tokens=rollout.image_ids[i],
                image=images[i],
                plan_logprobs=rollout.think_logprobs[i],
                image_logprobs=rollout.image_logprobs[i],
                plan_ids=rollout.think_ids[i],
                boi_sampled=boi_sampled[i],
            )
            for i, row in enumerate(rows)
        ]

    def logprobs(
        self,
        prompts: list[str],
        plan_ids: list[list[int]],
        image_ids: torch.Tensor,
        think: bool,
        boi_sampled: list[bool],
        settings: SamplingSettings | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Teacher-forced log-probs of plans and images (differentiable), equal to the sampler's."""
        contexts = [self.encode(p, think) for p in prompts]
        return teacher_forced_logprobs(
            self.model, contexts, plan_ids, image_ids, self.special, settings or SamplingSettings(), boi_sampled
        )

    # -- images ----------------------------------------------------------------------------

    def decode(self, image_ids: torch.Tensor) -> list[Image.Image]:
        return decode_tokens(self.model.model.vqmodel, image_ids)

    def blank_token(self) -> int:
        """The code of an empty patch: what a partial image shows where nothing is drawn yet."""
        if self._blank is None:
            tokens = encode_images(self.model.model.vqmodel, [render_image([])])[0]
            self._blank = int(tokens.mode().values)
        return self._blank

    def decode_partial(self, image_ids: torch.Tensor, step: int) -> list[Image.Image]:
        """Images from the first `step` tokens of each row (raster order), the rest left empty."""
        partial = image_ids.clone()
        partial[:, step:] = self.blank_token()
        return self.decode(partial)
