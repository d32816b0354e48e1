"""The sampling engine: think (text tokens), then draw (image tokens), with one KV cache, CFG and per-row RNG.

A row is one sequence through the Janus language model:

    [bos] prompt ([think]) plan-tokens [boi] img_1 ... img_N

Text tokens go in through `embed_tokens` and come out through `lm_head`; image tokens go in through
`prepare_embeddings_for_image_generation` and come out through `generation_head`. We run our own loop over
these public submodules rather than `model.generate(generation_mode="image")`, because HF's image generate
cannot continue a text-generated prefix in the same cache, samples from the global RNG (no per-row
generators), crashes at guidance_scale=1 and returns no per-step log-probs (scratch/janus/NOTES.md).

Batching. Prompts are left-padded; the 2-D attention mask grows with every fed column and RoPE positions
are cumsum(mask) - 1, so padding never shifts a row's positions. A row whose plan ended (it sampled boi)
while others still think gets masked pad columns until the whole batch feeds boi together, so the image
steps run in lock-step. A row's tokens therefore do not depend on the other rows of its batch, up to float
rounding: CPU kernels round differently with the batch size (on the shipped model, log-probs within 1e-4 of
the same rows sampled alone), so in a long run a sampled token can flip where u falls that close to a step
of the CDF. The tiny-model tests hold bitwise.

CFG by batch doubling (LlamaGen, DiT). The B conditional rows think alone. At boi, B unconditional rows
are added below them: the same layout and mask, every real token except bos (and boi) replaced by pad.
Their prefix is prefilled into a cache of their own and stacked under the conditional cache, so rows
[0, B) are conditional and [B, 2B) unconditional. `cfg_combine` is the only place guidance happens; with
cfg_scale 1 there are no unconditional rows at all.

Randomness. Row i draws only from generators[i], one uniform per sampled token.

Image positions. Janus knows an image token's place only from its 1-D RoPE position. When the tokenizer has
position tokens (SpecialIds.image_positions, the world model), the image token at index k goes in with the
embedding row of position k + 1 added, the place of the token it predicts (the first image token is
predicted from boi, which needs none); the text head never offers position tokens.

Plan-guided positions (`Layout`, a world model whose tokenizer has layout tokens). Each image position can
also get rows of the text embedding that say which planned box it lies in, where in the box and how big the
box is, and what the box's phrase names (built by the policy from the plan: `thinkdraw.policy.layout`). They
are added like the position rows (to the token that predicts that position), on the conditional rows only:
CFG's unconditional branch has no plan, so no layout.

`teacher_forced_logprobs` recomputes the sampler's log-probs with one differentiable forward over the
full sequences (left-padded, no internal pads: the masked columns the sampler had change nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import JanusForConditionalGeneration, StaticCache

from thinkdraw.engine.settings import SamplingSettings


@dataclass(frozen=True)
class SpecialIds:
    """Text-token ids the engine needs. In think mode the plan ends when the model samples `boi`."""

    pad: int
    bos: int
    boi: int  # begin-of-image
    image_positions: range | None = None  # ids of the position tokens, one per image token (None: Janus-Pro)
    layout_tokens: range | None = None  # ids of the layout tokens (never written in text either)


@dataclass(frozen=True)
class Layout:
    """Per row and image position, ids of embedding rows added to the input that predicts that position."""

    ids: Tensor  # [B, N, M] long
    mask: Tensor  # [B, N, M] float: 1 where ids[..] is a row to add


@dataclass
class Rollout:
    prompt_ids: list[list[int]]  # per row, as given (starts with bos)
    think_ids: list[list[int]]  # per row, plan tokens without the final boi (empty when think=False)
    image_ids: Tensor  # [B, N] long
    think_logprobs: list[Tensor]  # per row [len(think_ids[i]) (+1 when boi was sampled)]
    image_logprobs: Tensor  # [B, N] under the processed (CFG'd, tempered, top-k'd) distribution
    drawn: list[int]  # per row, image tokens drawn: N, or fewer where on_image_step pruned the row (rest 0)

    @property
    def boi_sampled(self) -> list[bool]:
        """Per row, whether the plan ended by sampling boi (then its last think log-prob is boi's)."""
        return [len(lp) == len(t) + 1 for lp, t in zip(self.think_logprobs, self.think_ids, strict=True)]


# -- pure sampling primitives ---------------------------------------------------------------------------------


def process_logits(logits: Tensor, temperature: float, top_k: int) -> Tensor:
    """Log-probs [..., V] of the distribution we sample from: temperature, then top-k (HF's order).

    Computed in float32 (float64 if given float64) so bf16 models sample from well-resolved probabilities.
    Temperature 0 means greedy; the log-probs are then those of the untempered distribution, which keeps them
    finite and useful as a confidence. Ties at the k-th value are all kept."""
    x = logits if logits.dtype == torch.float64 else logits.float()
    if temperature > 0:
        x = x / temperature
    if 0 < top_k < x.shape[-1]:
        kth = torch.topk(x, top_k, dim=-1).values[..., -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    return torch.log_softmax(x, dim=-1)


def sample_tokens(
    logits: Tensor, generators: list[torch.Generator], temperature: float, top_k: int
) -> tuple[Tensor, Tensor]:
    """Draw one token per row from logits [b, V], row i with generators[i]; return the tokens [b] (long) and
    their log-probs [b] under the processed distribution.

    Inverse-CDF sampling with exactly one float64 uniform per row and call, greedy included, so the k-th token
    of a row always uses the k-th number of its generator whatever the settings or the rest of the batch. All
    rows in one go and nothing read back to the host: on a GPU a step costs a few kernels, not a sync a row."""
    logps = process_logits(logits, temperature, top_k)
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64, device=g.device) for g in generators])
    if u.device != logits.device and logits.is_cuda:  # host generators: a pinned copy, so the host never waits
        u = u.pin_memory().to(logits.device, non_blocking=True)
    if temperature == 0:
        tokens = logps.argmax(-1)
    else:
        cdf = logps.double().exp().cumsum(-1)
        total = cdf[:, -1:]
        # kept below the total, so the first cdf entry above it is a token with mass even where u * total rounds
        # up to the total (the last token with mass, then)
        target = torch.minimum(total * u[:, None], torch.nextafter(total, torch.zeros_like(total)))
        tokens = torch.searchsorted(cdf, target, right=True)[:, 0]
    return tokens, logps.gather(-1, tokens[:, None])[:, 0]


def sample_next_token(logits: Tensor, generator: torch.Generator, temperature: float, top_k: int) -> tuple[int, float]:
    """sample_tokens for one row: logits [V] -> the token and its log-prob."""
    tokens, logps = sample_tokens(logits[None], [generator], temperature, top_k)
    return int(tokens[0]), float(logps[0])


def cfg_combine(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance on logits, uncond + scale * (cond - uncond) (HF's
    ClassifierFreeGuidanceLogitsProcessor). The one place guidance happens, for sampling and teacher forcing."""
    return uncond + scale * (cond - uncond)


# -- shared helpers ---------------------------------------------------------------------------------------------


def _upcast(x: Tensor) -> Tensor:
    return x if x.dtype == torch.float64 else x.float()


def _left_pad(rows: list[list[int]], pad: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """ids [B, T] and mask [B, T] with every row right-aligned, so all rows end in the same column."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), T), dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        if r:
            ids[i, T - len(r) :] = torch.tensor(r, device=device)
            mask[i, T - len(r) :] = 1
    return ids, mask


def _uncond_ids(ids: Tensor, mask: Tensor, special: SpecialIds) -> Tensor:
    """The unconditional branch: every real token except bos and boi becomes pad, the mask stays (HF's rule)."""
    keep = (mask == 0) | (ids == special.bos) | (ids == special.boi)
    return torch.where(keep, ids, torch.full_like(ids, special.pad))


def _positions(mask: Tensor) -> Tensor:
    """RoPE positions that skip padding: each real token's index among the row's real tokens."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _guided_image_logits(model: JanusForConditionalGeneration, hidden: Tensor, B: int, cfg_scale: float) -> Tensor:
    """hidden [R, ..., H] (R = B, or 2B with the unconditional rows below) -> image logits [B, ..., V_img]."""
    scores = _upcast(model.model.generation_head(hidden))
    if scores.shape[0] == B:
        return scores
    return cfg_combine(scores[:B], scores[B:], cfg_scale)


def _text_head(model: JanusForConditionalGeneration, hidden: Tensor, special: SpecialIds) -> Tensor:
    """Text logits [..., V_text]; position tokens get -inf (they are never written)."""
    logits = model.lm_head(hidden)
    ranges = [r for r in (special.image_positions, special.layout_tokens) if r is not None]
    if not ranges:
        return logits
    never = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    for r in ranges:
        never[r.start : r.stop] = True
    return logits.masked_fill(never, float("-inf"))


def _text_logits(model, hidden: Tensor, think_ids: list[list[int]], L: int, special: SpecialIds) -> list:
    """Raw text logits per row [len(think) + 1, V_text] that predict each plan token and then boi, where
    hidden [B, >= L, H] holds left-padded text whose boi sits in column L - 1."""
    return [_text_head(model, hidden[i, L - 2 - len(t) : L - 1], special) for i, t in enumerate(think_ids)]


def image_embeddings(model: JanusForConditionalGeneration, image_ids: Tensor, first: int, special: SpecialIds):
    """Input embeddings [B, n, H] of image tokens [B, n] that sit at indices first, first + 1, ... of the image,
    each with the position row of the token it predicts added when the model has position tokens."""
    embeds = model.prepare_embeddings_for_image_generation(image_ids)
    if special.image_positions is None:
        return embeds
    rows = special.image_positions[first + 1 : first + 1 + image_ids.shape[1]]
    index = torch.arange(rows.start, rows.stop, device=image_ids.device)
    return embeds + model.model.language_model.get_input_embeddings()(index)


def layout_rows(model: JanusForConditionalGeneration, layout: Layout, first: int, n: int) -> Tensor:
    """The summed layout rows [B, n, H] for image positions first .. first + n - 1."""
    embed = model.model.language_model.get_input_embeddings()
    ids, mask = layout.ids[:, first : first + n], layout.mask[:, first : first + n]  # [B, n, M]
    return (embed(ids) * mask[..., None].to(embed.weight.dtype)).sum(2)


def _text_logprobs(logits: Tensor, targets: list[int], settings: SamplingSettings) -> Tensor:
    logps = process_logits(logits[: len(targets)], settings.text_temperature, settings.text_top_k)  # [n, V]
    index = torch.tensor(targets, dtype=torch.long, device=logits.device)
    return logps.gather(-1, index[:, None])[:, 0]


class _Stream:
    """Rows being extended column by column. With a cache only the new columns go through the model; without,
    every feed recomputes the whole sequence from the stored input embeddings (the reference the cache is
    tested against). The cache is allocated once for `capacity` columns and written in place (transformers'
    static cache), so a step copies nothing that grows with the sequence. Always passes the 2-D mask: with mask
    and cache both None, transformers would read left-pad positions as packed-sequence boundaries."""

    def __init__(self, model: JanusForConditionalGeneration, rows: int, use_cache: bool, capacity: int):
        self.lm = model.model.language_model
        weight = self.lm.get_input_embeddings().weight
        self.mask = torch.zeros(rows, 0, dtype=torch.long, device=weight.device)
        self.cache = StaticCache(config=self.lm.config, max_cache_len=capacity) if use_cache else None
        self.embeds = None if use_cache else weight.new_zeros(rows, 0, weight.shape[1])

    def feed(self, embeds: Tensor, mask: Tensor) -> Tensor:
        """embeds [R, T, H] and mask [R, T] of new columns -> their last hidden states [R, T, H]."""
        T = embeds.shape[1]
        self.mask = torch.cat([self.mask, mask], dim=1)
        positions = _positions(self.mask)  # [R, S]
        if self.cache is not None:
            out = self.lm(
                inputs_embeds=embeds,
                attention_mask=self.mask,
                position_ids=positions[:, -T:],
                cache=self.cache,
                use_cache=True,
            )
            return out.last_hidden_state
        self.embeds = torch.cat([self.embeds, embeds], dim=1)
        out = self.lm(inputs_embeds=self.embeds, attention_mask=self.mask, position_ids=positions, use_cache=False)
        return out.last_hidden_state[:, -T:]

    def select(self, rows: Tensor) -> None:
        """Keep only these rows (a 1-D index), in this order: the KV cache shrinks with them."""
        self.mask = self.mask[rows]
        if self.cache is not None:
            for layer in self.cache.layers:  # [R, h, capacity, d] -> [R', h, capacity, d]
                layer.keys, layer.values, layer.batch_size = layer.keys[rows], layer.values[rows], len(rows)
        else:
            self.embeds = self.embeds[rows]

    def stack(self, other: _Stream) -> _Stream:
        """Rows of self above rows of other (equal lengths, one capacity): the [cond; uncond] batch of CFG.
        Takes over self's cache."""
        both = _Stream.__new__(_Stream)
        both.lm, both.mask = self.lm, torch.cat([self.mask, other.mask])
        both.cache = both.embeds = None
        if self.cache is not None:
            for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):  # [2B, h, capacity, d]
                mine.keys, mine.values = torch.cat([mine.keys, theirs.keys]), torch.cat([mine.values, theirs.values])
                mine.batch_size = mine.keys.shape[0]
            both.cache, self.cache = self.cache, None
        else:
            both.embeds = torch.cat([self.embeds, other.embeds])
        return both


# -- sampling ---------------------------------------------------------------------------------------------------


@dataclass
class _Plans:
    ids: Tensor  # [B, T] left-padded prompt + plan columns (masked pad where a row had already ended)
    mask: Tensor  # [B, T]
    fed: int  # columns already in the conditional stream; the rest are fed together with boi
    think_ids: list[list[int]]
    logprobs: list[list[float]]


def _sample_plans(model, stream: _Stream, prompt_ids, special: SpecialIds, settings: SamplingSettings, generators):
    """Think on the conditional rows until each row samples boi or reaches max_think_tokens."""
    B = len(prompt_ids)
    embed = model.model.language_model.get_input_embeddings()
    ids, mask = _left_pad(prompt_ids, special.pad, stream.mask.device)
    hidden = stream.feed(embed(ids), mask)[:, -1]  # [B, H]
    think_ids: list[list[int]] = [[] for _ in range(B)]
    logprobs: list[list[float]] = [[] for _ in range(B)]
    done = [False] * B
    pending = False  # the last sampled column is fed with the next step (or with boi)
    for _ in range(settings.max_think_tokens):
        if pending:
            hidden = stream.feed(embed(ids[:, -1:]), mask[:, -1:])[:, -1]
            pending = False
        logits = _upcast(_text_head(model, hidden, special))  # [B, V_text]
        column, column_mask = torch.full_like(ids[:, 0], special.pad), torch.zeros_like(mask[:, 0])
        rows = [i for i in range(B) if not done[i]]
        tokens, logps = sample_tokens(
            logits[rows], [generators[i] for i in rows], settings.text_temperature, settings.text_top_k
        )
        for i, token, logp in zip(rows, tokens.tolist(), logps.tolist(), strict=True):
            logprobs[i].append(logp)
            if token == special.boi:  # fed later, in the column all rows share
                done[i] = True
            else:
                think_ids[i].append(token)
                column[i], column_mask[i] = token, 1
        if not column_mask.any():  # every row ended: an all-masked column would change nothing
            break
        ids, mask = torch.cat([ids, column[:, None]], 1), torch.cat([mask, column_mask[:, None]], 1)
        pending = True
    return _Plans(ids, mask, ids.shape[1] - int(pending), think_ids, logprobs)


@torch.no_grad()  # not inference_mode: its tensors could not be saved for a later backward (image_ids as index)
def generate(
    model: JanusForConditionalGeneration,
    prompt_ids: list[list[int]],
    special: SpecialIds,
    settings: SamplingSettings,
    generators: list[torch.Generator],
    think: bool,
    num_image_tokens: int,
    use_cache: bool = True,
    plan_ids: list[list[int]] | None = None,
    on_image_step: Callable[[int, Tensor], Tensor | None] | None = None,
    layout_of: Callable[[list[list[int]]], Layout | None] | None = None,
    on_plans: Callable[[list[list[int]]], None] | None = None,
) -> Rollout:
    """Sample a plan (think=True, unless plan_ids gives it), then num_image_tokens image tokens after boi.

    use_cache=False recomputes the whole sequence at every step (slow; the reference for tests).
    on_image_step(k, image_ids[:, :k]) is called after each image step k = 1..N with all B rows (a pruned row
    keeps what it had drawn); it may return a bool keep-mask [B]: rows it turns False stop here (PARM's
    pruning), their cache rows are dropped, and no more compute goes to them; the rest sample exactly as they
    would have (each row draws from its own generator). Rollout.drawn says how far each row got.
    layout_of(plans) gives the plan-guided positions of the plans once they are written (None: none);
    on_plans(plans) hears the plans' tokens then, before the first image step (a verifier judging partial images
    may read them)."""
    B = len(prompt_ids)
    if len(generators) != B or B == 0 or any(len(p) == 0 for p in prompt_ids):
        raise ValueError(f"need one generator per non-empty prompt, got {len(generators)} for {B} prompts")
    if plan_ids is not None and (not think or len(plan_ids) != B):
        raise ValueError("plan_ids needs think=True and one plan per prompt")
    if num_image_tokens < 1:
        raise ValueError(f"num_image_tokens is {num_image_tokens}: draw at least one")
    settings = settings.resolved()
    guided = settings.cfg_scale != 1.0
    R = 2 * B if guided else B
    embed = model.model.language_model.get_input_embeddings()

    if think and plan_ids is None and settings.max_think_tokens > 0:
        capacity = max(map(len, prompt_ids)) + settings.max_think_tokens + num_image_tokens  # + boi - the last
        cond = _Stream(model, B, use_cache, capacity)
        plans = _sample_plans(model, cond, prompt_ids, special, settings, generators)
        ids, mask, fed, think_ids = plans.ids, plans.mask, plans.fed, plans.think_ids
        stream = cond
        if guided:
            uncond = _Stream(model, B, use_cache, capacity)
            uncond.feed(embed(_uncond_ids(ids[:, :fed], mask[:, :fed], special)), mask[:, :fed])
            stream = cond.stack(uncond)
    else:  # the plan is given (or there is none): the whole text goes in with boi
        think_ids = [list(p) for p in plan_ids] if plan_ids is not None else [[] for _ in range(B)]
        ids, mask = _left_pad(
            [p + t for p, t in zip(prompt_ids, think_ids, strict=True)], special.pad, embed.weight.device
        )
        capacity = ids.shape[1] + num_image_tokens  # + boi - the last image token, which is never fed
        fed, plans, stream = 0, None, _Stream(model, R, use_cache, capacity)

    # boi, together with the text columns not fed yet, for all R rows
    ids = torch.cat([ids[:, fed:], torch.full_like(ids[:, :1], special.boi)], 1)  # [B, T']
    mask = torch.cat([mask[:, fed:], torch.ones_like(mask[:, :1])], 1)  # [B, T']
    if guided:
        ids, mask = torch.cat([ids, _uncond_ids(ids, mask, special)]), mask.repeat(2, 1)  # [2B, T']
    hidden = stream.feed(embed(ids), mask)  # [R, T', H]

    logp_dtype = torch.float64 if embed.weight.dtype == torch.float64 else torch.float32  # as _upcast gives
    if plans is not None:
        think_logprobs = [torch.tensor(lp, dtype=logp_dtype, device=ids.device) for lp in plans.logprobs]
    else:  # log-probs of the given plan tokens (boi was not sampled), from the forward that fed them
        text_logits = _text_logits(model, hidden[:B], think_ids, hidden.shape[1], special)
        think_logprobs = [
            _text_logprobs(_upcast(lg), t, settings) for lg, t in zip(text_logits, think_ids, strict=True)
        ]

    layout = layout_of(think_ids) if layout_of is not None else None
    if on_plans is not None:
        on_plans(think_ids)
    image_ids = torch.zeros(B, num_image_tokens, dtype=torch.long, device=ids.device)
    image_logprobs = torch.zeros(B, num_image_tokens, dtype=logp_dtype, device=ids.device)
    drawn = [num_image_tokens] * B
    alive = torch.arange(B, device=ids.device)  # the rows still drawing, in stream order
    alive_generators = list(generators)
    h = hidden[:, -1]  # [R, H]
    for k in range(num_image_tokens):
        logits = _guided_image_logits(model, h, len(alive), settings.cfg_scale)  # [b, V_img]
        tokens, logps = sample_tokens(logits, alive_generators, settings.temperature, settings.top_k)
        image_ids[alive, k], image_logprobs[alive, k] = tokens, logps.to(logp_dtype)
        if on_image_step is not None:
            keep = on_image_step(k + 1, image_ids[:, : k + 1].clone())
            if keep is not None and not bool(keep[alive].all()):
                kept = keep[alive].nonzero()[:, 0]  # [b'] places in the stream of the rows that go on
                for i in alive[keep[alive].logical_not()].tolist():
                    drawn[i] = k + 1
                alive = alive[kept]
                alive_generators = [generators[i] for i in alive.tolist()]
                if len(alive) == 0:
                    break
                if k + 1 < num_image_tokens:
                    rows = torch.cat([kept, kept + len(h) // 2]) if guided else kept  # [cond; uncond] halves
                    stream.select(rows)
                    h = h[rows]
                    layout = None if layout is None else Layout(layout.ids[kept], layout.mask[kept])
        if k + 1 < num_image_tokens:
            e = image_embeddings(model, image_ids[alive, k : k + 1], k, special)  # [b, 1, H]
            cond = e if layout is None else e + layout_rows(model, layout, k + 1, 1)
            e = torch.cat([cond, e]) if guided else cond  # [R, 1, H]: no layout without the plan
            h = stream.feed(e, torch.ones_like(mask[: len(e), :1]))[:, -1]  # [R, H]
    prompts = [list(p) for p in prompt_ids]
    return Rollout(prompts, think_ids, image_ids, think_logprobs, image_logprobs, drawn)


# -- teacher forcing --------------------------------------------------------------------------------------------


def _full_sequence_hidden(
    model, prompt_ids, think_ids, image_ids: Tensor, special: SpecialIds, branches, layout: Layout | None = None
) -> tuple:
    """One forward over the full sequences, one block of B rows per branch (False = conditional, True =
    unconditional; only conditional rows get the layout). Returns hidden [len(branches) * B, L + N - 1, H] and
    L, the text width (boi in column L-1)."""
    B, N = image_ids.shape
    texts = [p + t + [special.boi] for p, t in zip(prompt_ids, think_ids, strict=True)]
    ids, mask = _left_pad(texts, special.pad, image_ids.device)  # [B, L]
    L = ids.shape[1]
    embed = model.model.language_model.get_input_embeddings()
    images = image_embeddings(model, image_ids[:, :-1], 0, special)  # [B, N-1, H]: the last predicts nothing
    guided = images if layout is None else images + layout_rows(model, layout, 1, N - 1)
    rows = [
        torch.cat([embed(_uncond_ids(ids, mask, special) if u else ids), images if u else guided], 1) for u in branches
    ]
    embeds = torch.cat(rows)  # [R, L + N - 1, H]
    full_mask = torch.cat([mask, mask.new_ones(B, N - 1)], 1).repeat(len(branches), 1)  # [R, L + N - 1]
    out = model.model.language_model(
        inputs_embeds=embeds, attention_mask=full_mask, position_ids=_positions(full_mask), use_cache=False
    )
    return out.last_hidden_state, L


def sequence_logits(
    model: JanusForConditionalGeneration,
    prompt_ids: list[list[int]],
    think_ids: list[list[int]],
    image_ids: Tensor,
    special: SpecialIds,
    uncond: bool = False,
    layout: Layout | None = None,
) -> tuple[list[Tensor], Tensor]:
    """Raw logits of one forward over prompt + plan + boi + image (no temperature, top-k or CFG), for losses.

    Returns text logits per row [len(think_ids[i]) + 1, V_text], predicting each plan token and then boi, and
    image logits [B, N, V_img] predicting image_ids. uncond=True runs the unconditional rows instead."""
    hidden, L = _full_sequence_hidden(model, prompt_ids, think_ids, image_ids, special, (uncond,), layout)
    image_logits = model.model.generation_head(hidden[:, L - 1 :])  # [B, N, V_img]
    return _text_logits(model, hidden, think_ids, L, special), image_logits


def teacher_forced_logprobs(
    model: JanusForConditionalGeneration,
    prompt_ids: list[list[int]],
    think_ids: list[list[int]],
    image_ids: Tensor,
    special: SpecialIds,
    settings: SamplingSettings,
    boi_sampled: list[bool],
    layout: Layout | None = None,
) -> tuple[list[Tensor], Tensor]:
    """The sampler's log-probs, recomputed differentiably in one forward ([cond; uncond] rows when guided).

    Returns think log-probs per row as in Rollout (boi's last when boi_sampled[i]) and image log-probs [B, N],
    under the same processing as `generate` (temperature, top-k, CFG), so they match Rollout's up to float
    noise. Note a token on the top-k boundary could fall out of it under that noise (log-prob -inf)."""
    B = len(prompt_ids)
    settings = settings.resolved()
    branches = (False, True) if settings.cfg_scale != 1.0 else (False,)
    hidden, L = _full_sequence_hidden(model, prompt_ids, think_ids, image_ids, special, branches, layout)
    text_logits = _text_logits(model, hidden[:B], think_ids, L, special)
    think_logprobs = []
    for logits, plan, sampled in zip(text_logits, think_ids, boi_sampled, strict=True):
        targets = plan + [special.boi] if sampled else plan
        think_logprobs.append(_text_logprobs(_upcast(logits), targets, settings))
    image_logits = _guided_image_logits(model, hidden[:, L - 1 :], B, settings.cfg_scale)  # [B, N, V_img]
    logps = process_logits(image_logits, settings.temperature, settings.top_k)  # [B, N, V_img]
    return think_logprobs, logps.gather(-1, image_ids[..., None])[..., 0]
