"""The Policy: one think-then-draw model on transformers' JanusForConditionalGeneration.

The shapes-world model is a small Janus config trained here (`thinkdraw.world.model`); Janus-Pro-1B/7B
load through the same class (`Policy.load("deepseek-community/Janus-Pro-1B")` with the weights at hand).
What differs between them is read from the checkpoint itself: the special tokens the tokenizer declares
and its prompt format (`thinkdraw.policy.formats`), the image size and empty patch from its own VQ.
Everything the methods need goes through this interface:

    think(prompts)                       -> plans (text)
    draw(prompts, plans)                 -> image tokens drawn after the given plans
    generate(prompts, think, ..., plans) -> candidates: plan, image tokens, image, log-probs
    logprobs(...)                        -> teacher-forced log-probs (differentiable) for trainers
    decode(tokens) / decode_partial(tokens, step)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoTokenizer, JanusForConditionalGeneration

from thinkdraw.checkpoint import CheckpointError, load_model
from thinkdraw.engine.sampling import Layout, Rollout, SamplingSettings, generate, teacher_forced_logprobs
from thinkdraw.plan import REASONING, UnknownWordError
from thinkdraw.policy.formats import Revision, decode_text, prompt_format, special_ids, unknown_words
from thinkdraw.policy.layout import LayoutBuilder
from thinkdraw.policy.vq import decode_tokens, empty_token, image_size
from thinkdraw.runtime import Runtime


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
    reasoning: str | None = None  # "plan" or "rationale": what `plan` holds; None without thinking
    drawn: int | None = None  # image tokens drawn, when on_image_step pruned it early (the image is partial)


class Policy:
    def __init__(self, model: JanusForConditionalGeneration, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.special = special_ids(tokenizer)
        self.format = prompt_format(tokenizer)
        vq = model.model.vqmodel
        self.num_image_tokens = vq.config.num_patches**2
        self.image_size = image_size(vq)
        positions = self.special.image_positions
        if positions is not None and len(positions) != self.num_image_tokens:
            raise CheckpointError(
                f"the tokenizer has {len(positions)} image-position tokens; the model draws {self.num_image_tokens}"
            )
        self._empty: int | None = None
        grid = vq.config.num_patches
        self.layout = LayoutBuilder.of(tokenizer, self.image_size, grid, lambda ids: decode_text(tokenizer, ids))
        if self.layout is not None:
            self.special = replace(self.special, layout_tokens=self.layout.token_range)

    @classmethod
    def load(cls, path: str | Path, runtime: Runtime | None = None) -> Policy:
        """A local checkpoint directory or a hub id (model and tokenizer together), on the runtime's device
        and dtype (default: float32 on the CPU). A world VQ's encoder stays float32 (its codes sit close)."""
        runtime = runtime or Runtime("cpu", "float32")
        model = load_model(JanusForConditionalGeneration, path, dtype=torch.float32)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{path}: cannot load the tokenizer ({str(err).splitlines()[0]})") from None
        model.to(device=runtime.device, dtype=runtime.torch_dtype)
        if getattr(model.model.vqmodel.config, "patch_local", False):
            model.model.vqmodel.float()
        model.eval()
        return cls(model, tokenizer)

    def save(self, path: str | Path) -> None:
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    @property
    def guidance_scale(self) -> float | None:
        """The guidance scale the checkpoint asks for (generation_config.guidance_scale), if any."""
        return self._generation_default("guidance_scale")

    def _generation_default(self, key: str) -> float | None:
        return getattr(getattr(self.model, "generation_config", None), key, None)

    def resolve(self, settings: SamplingSettings | None, after_plan: bool = False) -> SamplingSettings:
        """Settings with this checkpoint's defaults where they name none (SamplingSettings.resolved): its
        generation config's guidance_scale, and after a plan with boxes (thinking in the plan format) its
        plan_guidance_scale and plan_image_temperature where it has them. The world SFT draws best greedily
        without guidance after a plan, as given the plan's boxes its most likely tokens are the right ones, but
        at temperature 1 and CFG 2 without one (a rationale, no thinking), where its most likely token is an empty
        patch everywhere."""
        cfg_scale, temperature = self.guidance_scale, None
        if after_plan:
            cfg_scale = self._generation_default("plan_guidance_scale") or cfg_scale
            temperature = self._generation_default("plan_image_temperature")
        return (settings or SamplingSettings()).resolved(cfg_scale, temperature)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # -- text ------------------------------------------------------------------------------

    def encode(self, prompt: str, think: bool, reasoning: str = "plan", revision: Revision | None = None) -> list[int]:
        """The context a row starts from, in the checkpoint's prompt format (bos first); reasoning: what thinking
        writes, a plan (GoT-R1) or a rationale (ReasonGen-R1); revision: a second try (the earlier reasoning and
        the feedback on its image, PARM++)."""
        return self.format.context(prompt, think, reasoning, revision)

    def plan_ids(self, plan: str) -> list[int]:
        """A given plan's tokens; UnknownWordError names the words a closed-vocabulary tokenizer lacks."""
        ids = self.tokenizer(plan, add_special_tokens=False)["input_ids"]
        unknown = unknown_words(self.tokenizer, plan, ids)
        if unknown:
            raise UnknownWordError(f"the plan has words the model does not know: {', '.join(map(repr, unknown))}")
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
        reasoning: str = "plan",
        revisions: list[Revision | None] | None = None,
        on_plans=None,
    ) -> Rollout:
        """Row i samples from its own generator, seeded by (seed, row_ids[i]) (default: i)."""
        settings = self.resolve(settings, after_plan=think and reasoning == "plan")
        revisions = revisions or [None] * len(prompts)
        contexts = [self.encode(p, think, reasoning, r) for p, r in zip(prompts, revisions, strict=True)]
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
                layout_of=self.layout_of,
                on_plans=(lambda ids: on_plans([decode_text(self.tokenizer, t) for t in ids])) if on_plans else None,
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
        plans: list[str] | None = None,
        reasoning: str = "plan",
        revisions: list[Revision | None] | None = None,
        on_plans=None,
    ) -> list[Candidate]:
        """n candidates per prompt, in prompt order (prompt 0's n candidates first).

        Candidate j of prompt k is seeded by (seed, indices[k] * n + j); `indices` (default 0, 1, ...) are the
        prompts' places in a larger run, so that a prompt's candidates do not depend on how the run is batched.
        `plans` (one per prompt, needs think): draw after these plans instead of writing them (GoT's editing).
        `reasoning`: what thinking writes, "plan" (GoT-R1's boxes) or "rationale" (ReasonGen-R1's sentences).
        `revisions` (one per prompt, or None for a first try): a second try after feedback (PARM++).
        `on_image_step(k, image_ids[:, :k])` may return a keep-mask over the rows to stop some early (the
        engine's pruning); a stopped candidate's image shows what it drew (`drawn` tokens). `on_plans(texts)`
        hears each row's reasoning text once it is written, before the first image step."""
        if plans is not None and (not think or len(plans) != len(prompts)):
            raise ValueError("plans needs think=True and one plan per prompt")
        if reasoning not in REASONING:
            raise ValueError(f"reasoning {reasoning!r}: choose one of {', '.join(REASONING)}")
        indices = range(len(prompts)) if indices is None else indices
        rows = [p for p in prompts for _ in range(n)]
        row_plans = [p for p in plans for _ in range(n)] if plans is not None else None
        row_revisions = [r for r in revisions for _ in range(n)] if revisions is not None else None
        row_ids = [k * n + j for k in indices for j in range(n)]
        rollout = self._rollout(
            rows,
            think,
            seed,
            settings or SamplingSettings(),
            row_plans,
            on_image_step,
            row_ids,
            reasoning,
            row_revisions,
            on_plans if think else None,
        )
        shown = rollout.image_ids.clone()
        for i, n in enumerate(rollout.drawn):
            if n < self.num_image_tokens:  # pruned: what it drew, the rest empty
                shown[i, n:] = self.blank_token()
        images = self.decode(shown)
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
                reasoning=reasoning if think else None,
                drawn=rollout.drawn[i] if rollout.drawn[i] < self.num_image_tokens else None,
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
        reasoning: str = "plan",
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Teacher-forced log-probs of plans and images (differentiable), equal to the sampler's."""
        contexts = [self.encode(p, think, reasoning) for p in prompts]
        settings = self.resolve(settings, after_plan=think and reasoning == "plan")
        layout = self.layout_of(plan_ids)
        return teacher_forced_logprobs(
            self.model, contexts, plan_ids, image_ids, self.special, settings, boi_sampled, layout
        )

    def layout_of(self, plans: list[list[int]]) -> Layout | None:
        """The plan-guided positions of these plans (token ids), or None for a model without layout tokens."""
        return self.layout(plans, self.device) if self.layout is not None else None

    # -- images ----------------------------------------------------------------------------

    def decode(self, image_ids: torch.Tensor) -> list[Image.Image]:
        return decode_tokens(self.model.model.vqmodel, image_ids)

    def blank_token(self) -> int:
        """The code of an empty patch, from the checkpoint's own VQ: what a partial image shows where nothing
        is drawn yet."""
        if self._empty is None:
            self._empty = empty_token(self.model.model.vqmodel)
        return self._empty

    def decode_partial(self, image_ids: torch.Tensor, step: int) -> list[Image.Image]:
        """Images from the first `step` tokens of each row (raster order; image_ids [B, >= step]), the rest
        left empty."""
        partial = image_ids.new_full((image_ids.shape[0], self.num_image_tokens), self.blank_token())
        partial[:, :step] = image_ids[:, :step]
        return self.decode(partial)
