"""What GRPO and DPO share: sampled sequences (`Rollouts`), sampling and scoring them, their teacher-forced
log-probs under the distribution they were sampled from, their place in a checkpoint, and LoRA.

The log-probs of a row are always those of the distribution it was drawn from: the same temperature and
guidance (CFG's unconditional forward included when cfg_scale is not 1), no top-k.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from thinkdraw.checkpoint import read_meta
from thinkdraw.engine.sampling import cfg_combine, process_logits, sequence_logits
from thinkdraw.engine.settings import SamplingSettings
from thinkdraw.errors import ThinkdrawError
from thinkdraw.policy.model import Candidate, Policy
from thinkdraw.rewards import LayoutRules, Reward, Sample, build_reward
from thinkdraw.runtime import Runtime
from thinkdraw.trainers.losses import entropy
from thinkdraw.trainers.sft import trainable_parameters

LORA_TARGETS = r"model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


class RunError(ThinkdrawError):
    """A run that cannot go on: a non-finite reward, loss or weight, or no batch with any signal."""


def check_finite(value: Tensor, what: str, step: int) -> None:
    if not torch.isfinite(value).all():
        raise RunError(f"step {step}: {what} is non-finite ({value.item():g}); stopped, the last checkpoint stays")


# -- sampling and scoring ---------------------------------------------------------------------------------------


def sample_scored(
    policy: Policy,
    records: Sequence[dict],
    reward: Reward,
    config,
    n: int,
    seed: int,
    step: int,
    what: str,
    indices: list[int] | None = None,
    plan_only: bool = False,
) -> tuple[list[Candidate], list[float | None]]:
    """n candidates per record (Policy.generate under config.sampling, config.think, config.reasoning; `indices`
    as there) and their rewards, in order. A non-finite reward stops the run (`what` names the batch).
    plan_only: every row stops at its first image token (the plans are whole), and the reward sees no image."""
    candidates = policy.generate(
        [r["prompt"] for r in records],
        config.think,
        n,
        seed,
        config.sampling,
        on_image_step=_stop_all if plan_only else None,
        reasoning=config.reasoning,
        indices=indices,
    )
    rows = [record for record in records for _ in range(n)]
    samples = [
        Sample(r, None if plan_only else c.image, c.plan, config.reasoning)
        for r, c in zip(rows, candidates, strict=True)
    ]
    scores = reward(samples)
    if len(scores) != len(samples):
        raise RunError(f"step {step}: the reward gave {len(scores)} scores for {len(samples)} samples")
    for i, score in enumerate(scores):
        if score.value is not None and not math.isfinite(score.value):
            raise RunError(
                f"step {step}: the reward is {score.value} (non-finite) for rollout {i} of {what} "
                f"({rows[i]['prompt']!r}: {score.reason or 'no reason given'}); stopped, the last checkpoint stays"
            )
    return candidates, [s.value for s in scores]


def _stop_all(step: int, image_ids: Tensor) -> Tensor:
    return torch.zeros(image_ids.shape[0], dtype=torch.bool)


def run_reward(
    config, detector=None, judges: Mapping[str, object] | None = None, layout: LayoutRules | None = None
) -> Reward:
    """The reward of config.reward; a judged one loads config.judge (a name in `judges`, else a folder, hub id
    or url) with thinkdraw.judges.load.resolve_judge; `detector` and `layout` are the environment's."""
    judge = None
    if config.needs_judge:
        from thinkdraw.judges.load import resolve_judge

        device = Runtime.create(config.device, "float32", config.threads).device
        judge = resolve_judge(config.judge, judges, device=device)
    return build_reward(config.reward, judge, detector, config.judged_by, layout)


@dataclass(frozen=True)
class HeldOut:
    """Prompts a run never trains on, drawn (one image each, the same seed each time) every `every` updates and
    scored by each measure: the run's own reward and, where there is one, the exact evaluator. Where the two
    part, the policy is learning its reward's blind spots (reward hacking)."""

    records: Sequence[dict]
    measures: Mapping[str, Reward]  # logged as held_<name>
    every: int


def held_out_metrics(policy: Policy, held: HeldOut | None, config, step: int) -> dict[str, float]:
    """The held-out scores at update `step` (before it), when it is one to measure; else nothing."""
    if held is None or step % held.every:
        return {}
    records = list(held.records)
    candidates = policy.generate(
        [r["prompt"] for r in records], config.think, 1, config.seed, config.sampling, reasoning=config.reasoning
    )
    samples = [Sample(r, c.image, c.plan, config.reasoning) for r, c in zip(records, candidates, strict=True)]
    metrics = {}
    for name, measure in held.measures.items():
        known = [s.value for s in measure(samples) if s.value is not None]
        metrics[f"held_{name}"] = sum(known) / len(known) if known else float("nan")
    return metrics


def rollouts_of(
    candidates: Sequence[Candidate],
    advantages: Sequence[float],
    index: int,
    stats: dict,
    device,
    plan_only: bool = False,
) -> Rollouts:
    """Rollouts of these candidates (every token of plan and image counted), with these advantages.
    plan_only: the candidates stopped at their first image token, which is kept but not counted."""
    text = [c.plan_logprobs for c in candidates]
    width = max((len(t) for t in text), default=0)
    image = torch.stack([c.image_logprobs for c in candidates]) if candidates else torch.zeros(0, 0)
    image_ids = torch.stack([c.image_tokens for c in candidates]) if candidates else torch.zeros(0, 0).long()
    if plan_only:
        image, image_ids = image[:, :1], image_ids[:, :1]
    old_logps = pack(text, image, width)
    mask = pack([torch.ones_like(t) for t in text], image.new_full(image.shape, float(not plan_only)), width)
    return Rollouts(
        index,
        [c.prompt for c in candidates],
        [c.plan_ids for c in candidates],
        [c.boi_sampled for c in candidates],
        image_ids.to(device),
        old_logps.to(device),
        mask.to(device),
        torch.tensor(list(advantages), dtype=old_logps.dtype, device=device),
        None,
        stats,
    )


# -- rollouts ---------------------------------------------------------------------------------------------------


@dataclass
class Rollouts:
    """Sampled sequences ready for teacher-forced updates: GRPO's rows of kept groups (with their advantages),
    DPO's pairs (chosen rows, then their rejected rows)."""

    index: int  # the batch's (GRPO) or round's (DPO) number: its prompts and rollout seeds
    prompts: list[str]  # per row
    plan_ids: list[list[int]]  # per row, without the final boi
    boi_sampled: list[bool]  # per row: the plan ended by sampling boi (its log-prob is counted)
    image_ids: Tensor  # [K, N]
    old_logps: Tensor  # [K, W + N]: the sampler's log-probs, plan tokens in columns < W, image tokens after
    mask: Tensor  # [K, W + N] float: 1 on the tokens that count
    advantages: Tensor  # [K] (GRPO's; DPO: +1 on chosen rows, -1 on rejected ones)
    ref_logps: Tensor | None  # [K, W + N] the reference policy's (GRPO: when kl_beta > 0)
    stats: dict[str, float]  # reward statistics of the whole batch

    @property
    def width(self) -> int:
        """W: the columns of plan tokens."""
        return self.old_logps.shape[1] - self.image_ids.shape[1]

    def rows(self, index: slice | list[int]) -> Rollouts:
        pick = range(len(self.prompts))[index] if isinstance(index, slice) else index
        ref = None if self.ref_logps is None else self.ref_logps[index]
        return Rollouts(
            self.index,
            [self.prompts[i] for i in pick],
            [self.plan_ids[i] for i in pick],
            [self.boi_sampled[i] for i in pick],
            self.image_ids[index],
            self.old_logps[index],
            self.mask[index],
            self.advantages[index],
            ref,
            self.stats,
        )


def pack(text: list[Tensor], image: Tensor, width: int) -> Tensor:
    """Per-row plan-token values (right-padded with 0 to `width`) then image-token values [K, N] -> [K, W + N]."""
    padded = [F.pad(t, (0, width - len(t))) for t in text]
    return torch.cat([torch.stack(padded) if padded else image.new_zeros(0, width), image], 1)


# -- teacher forcing --------------------------------------------------------------------------------------------


@dataclass
class TokenLogps:
    logps: Tensor  # [K, W + N] laid out as Rollouts.old_logps (0 where the mask is 0)
    text_entropy: Tensor  # scalar: mean entropy (nats) of the processed distributions over the plan tokens
    image_entropy: Tensor  # scalar: the same over the image tokens


def _float(x: Tensor) -> Tensor:
    return x if x.dtype == torch.float64 else x.float()


def _entropy(logps: Tensor) -> Tensor:
    """Mean entropy of log-prob rows [T, V] (tokens the model may never write, at -inf, add 0)."""
    if logps.shape[0] == 0:
        return logps.new_zeros(())
    return entropy(logps[None], logps.new_ones(1, logps.shape[0]))


def token_logprobs(policy: Policy, rollouts: Rollouts, config) -> TokenLogps:
    """The rows' log-probs under the distribution they were sampled from (config.sampling, config.think,
    config.reasoning: a GRPO or DPO config), differentiably: one forward over
    prompt + plan + boi + image (and the unconditional one when guided), then the sampler's processing
    (CFG on image logits, temperatures; as engine.sampling.teacher_forced_logprobs) and the entropies of it."""
    settings: SamplingSettings = config.sampling
    contexts = [policy.encode(p, config.think, config.reasoning) for p in rollouts.prompts]
    layout = policy.layout_of(rollouts.plan_ids)
    args = (policy.model, contexts, rollouts.plan_ids, rollouts.image_ids, policy.special)
    text_logits, image_logits = sequence_logits(*args, layout=layout)  # list of [T_i + 1, V_text], [K, N, V_img]
    image_logits = _float(image_logits)
    counted = bool(rollouts.mask[:, rollouts.width :].any())  # not with --plan-only: no image counts
    if settings.cfg_scale != 1.0 and counted:
        _, uncond = sequence_logits(*args, uncond=True, layout=layout)  # [K, N, V_img]
        image_logits = cfg_combine(image_logits, _float(uncond), settings.cfg_scale)
    image = process_logits(image_logits, settings.temperature, settings.top_k)  # [K, N, V_img]
    image_logps = image.gather(-1, rollouts.image_ids[..., None])[..., 0]  # [K, N]
    text, text_logps = [], []
    for logits, plan, sampled in zip(text_logits, rollouts.plan_ids, rollouts.boi_sampled, strict=True):
        targets = torch.tensor(plan + [policy.special.boi] if sampled else plan, device=image_logps.device)
        logps = process_logits(_float(logits[: len(targets)]), settings.text_temperature, settings.text_top_k)
        text.append(logps)  # [T_i (+1), V_text]
        text_logps.append(logps.gather(-1, targets[:, None])[:, 0])
    text_entropy = _entropy(torch.cat(text)) if text else image_logps.new_zeros(())
    image_entropy = _entropy(image.flatten(0, 1)) if counted else image_logps.new_zeros(())
    return TokenLogps(pack(text_logps, image_logps, rollouts.width), text_entropy, image_entropy)


def row_slices(rows: int, parts: int) -> list[slice]:
    """`parts` contiguous slices of near-equal size (some empty when rows < parts): kept rows vary per batch."""
    bounds = [round(i * rows / parts) for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


# -- checkpoint state -------------------------------------------------------------------------------------------


def rollouts_state(rollouts: Rollouts) -> tuple[dict, dict[str, Tensor]]:
    """A cached batch as JSON (prompts, plan tokens, stats) and tensors (for checkpoint `extra`)."""
    info = {
        "index": rollouts.index,
        "prompts": rollouts.prompts,
        "plan_ids": rollouts.plan_ids,
        "boi_sampled": rollouts.boi_sampled,
        "stats": rollouts.stats,
    }
    tensors = {
        "batch.image_ids": rollouts.image_ids,
        "batch.old_logps": rollouts.old_logps,
        "batch.mask": rollouts.mask,
        "batch.advantages": rollouts.advantages,
    }
    if rollouts.ref_logps is not None:
        tensors["batch.ref_logps"] = rollouts.ref_logps
    return info, tensors


def rollouts_from_state(info: dict, tensors: dict[str, Tensor], device) -> Rollouts:
    def get(name: str) -> Tensor | None:
        found = tensors.get(f"batch.{name}")
        return None if found is None else found.to(device)

    return Rollouts(
        info["index"],
        info["prompts"],
        info["plan_ids"],
        info["boi_sampled"],
        get("image_ids"),
        get("old_logps"),
        get("mask"),
        get("advantages"),
        get("ref_logps"),
        info["stats"],
    )


# -- LoRA -------------------------------------------------------------------------------------------------------


def add_lora(policy: Policy, config) -> list[torch.nn.Parameter]:
    """Inject LoRA adapters in place (peft) and freeze everything else; the adapters' parameters, in order."""
    from peft import LoraConfig, inject_adapter_in_model

    for param in policy.model.parameters():
        param.requires_grad_(False)
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha or config.lora_rank,
        lora_dropout=0.0,
        target_modules=LORA_TARGETS,
    )
    inject_adapter_in_model(lora, policy.model)
    return [p for name, p in policy.model.named_parameters() if ".lora_" in name and p.requires_grad]


def lora_tensors(model) -> dict[str, Tensor]:
    return {f"lora.{name}": p for name, p in model.named_parameters() if ".lora_" in name}


class MergedModel:
    """What save_checkpoint writes for a LoRA run: the model with each adapter merged into its base weight,
    under the names of a plain policy (the live model keeps its adapters)."""

    def __init__(self, model):
        from peft.tuners.lora import LoraLayer

        self.model = model
        state = {name.replace(".base_layer.", "."): t for name, t in model.state_dict().items() if ".lora_" not in name}
        for name, module in model.named_modules():
            if isinstance(module, LoraLayer):
                state[f"{name}.weight"] = (module.base_layer.weight + module.get_delta_weight("default")).detach()
        self.state = state

    def save_pretrained(self, path) -> None:
        self.model.save_pretrained(path, state_dict=self.state)


# -- the policy a run trains ------------------------------------------------------------------------------------


def saved_run(config, checkpoint: Path, kind: str) -> dict | None:
    """With config.resume, the metadata of the run's checkpoint, which must be a `kind` run with the same LoRA
    rank; else None."""
    saved = read_meta(checkpoint) if config.resume else None
    if saved and (saved.get("kind") != kind or saved["run_config"]["lora_rank"] != config.lora_rank):
        raise RunError(
            f"--resume: {checkpoint} is not from a {kind} run with --lora-rank {config.lora_rank} "
            f"(it is a {saved.get('kind')!r} checkpoint, lora rank {saved.get('run_config', {}).get('lora_rank')})"
        )
    return saved


def trainable_policy(config, checkpoint: Path, resuming: bool, runtime) -> tuple[Policy, list[torch.nn.Parameter]]:
    """The policy a run trains, in eval mode (dropout would make a ratio compare two different distributions),
    and its trainable parameters. With LoRA (config.lora_rank): config.init, untouched by training, plus fresh
    adapters (a resumed run restores its own with `restore_adapters`); else config.init, or the checkpoint when
    resuming, everything but the VQ and the understanding encoder training."""
    if config.lora_rank:
        policy = Policy.load(config.init, runtime)
        params = add_lora(policy, config)
    else:
        policy = Policy.load(checkpoint if resuming else config.init, runtime)
        params = trainable_parameters(policy.model)
    policy.model.eval()
    if config.gradient_checkpointing:
        language_model = policy.model.model.language_model
        if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in language_model.modules()) or getattr(
            language_model.config, "attention_dropout", 0.0
        ):
            raise RunError("--gradient-checkpointing needs a language model without dropout (it trains in train mode)")
        language_model.activation_checkpointing_enable({"use_reentrant": False})
    return policy, params


@contextmanager
def loss_forward(policy: Policy, config):
    """The forward a loss differentiates: with config.gradient_checkpointing the language model is in train mode
    inside (transformers checkpoints layers only there; trainable_policy made sure it has no dropout, so it
    computes what eval mode does), and back in eval mode after, for sampling with its KV cache."""
    language_model = policy.model.model.language_model
    if not config.gradient_checkpointing:
        yield
        return
    language_model.train()
    try:
        yield
    finally:
        language_model.eval()


def restore_adapters(model, extra: dict[str, Tensor]) -> None:
    with torch.no_grad():
        for name, param in lora_tensors(model).items():
            param.copy_(extra[name])


def model_to_save(model, lora_rank: int, tensors: dict[str, Tensor]):
    """What save_checkpoint writes: the model, or with LoRA its merged copy (the adapters go into `tensors`)."""
    if not lora_rank:
        return model
    tensors.update(lora_tensors(model))
    return MergedModel(model)
