"""GRPO on a policy's plan and image tokens (GoT-R1; ReasonGen-R1's recipe: several updates per batch, no KL,
groups with equal rewards dropped, optional adaptive entropy), over any list of GenEval-style records and any
reward (`thinkdraw.rewards`).

One batch: `prompts_per_batch` records drawn by a generator seeded by (seed, batch index) -> `group_size`
rollouts each (Policy.generate, seeded by the same generator) -> rewards -> group advantages (a None reward
leaves its group's baseline and its rollout the batch; a group without signal is dropped) -> the sampler's
log-probs of the plan and image tokens kept as old_logps. Then `updates_per_batch` optimizer updates, each:

    teacher-forced log-probs (with grad) -> grpo_loss (+ kl_beta * KL to the initial policy)
      (- c_txt * H_txt - c_img * H_img with --entropy) -> backward -> clip -> step -> log -> save

through the trainers' shared loop (`run_steps`: one of its steps is one optimizer update; the batch is made at
the first update that needs it and cached for the rest). The log-probs of the ratio are always those of the
distribution sampled: the same temperature and guidance (CFG's unconditional forward included when cfg_scale is
not 1), no top-k. The entropies are those of the same processed distributions, over plan tokens (boi included)
and image tokens separately; each coefficient is adapted after every update towards its target.

A batch in which every group is dropped is logged ("skipped") and the next is drawn, without an update; more
than `max_skipped` in a row stop the run. Batches are numbered, not tied to steps, so a skip does not shift any
later batch's prompts or seeds.

Exact resume. A checkpoint holds, besides weights, optimizer and torch RNG: the next batch's number, the
entropy coefficients, and, when saved in the middle of a batch's updates, that batch itself (its rollouts,
old_logps, mask, advantages and reference log-probs as tensors in trainer.safetensors, its prompts and plan
tokens in thinkdraw.json): a resumed run takes the next update on the very same rollouts, bitwise on the CPU.

LoRA (`lora_rank` > 0, peft): adapters on the language model's attention and MLP projections train, nothing
else does. The checkpoint's model is the merged one (base + B @ A * alpha / r, a plain policy that
Policy.load reads); the adapters themselves go in trainer.safetensors, so --resume rebuilds base (config.init,
untouched by training) + the same adapters exactly.

Non-finite rewards, losses or weights stop the run with a GRPOError naming what and where; the last checkpoint
written stays as it was (nothing is saved on that path).

The model stays in eval mode throughout: dropout would make the ratio compare two different distributions.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from thinkdraw.checkpoint import load_trainer_state, read_meta, save_checkpoint
from thinkdraw.configs import TrainGRPOConfig
from thinkdraw.engine.sampling import cfg_combine, process_logits, sequence_logits
from thinkdraw.engine.settings import SamplingSettings
from thinkdraw.errors import ThinkdrawError
from thinkdraw.policy.model import Policy
from thinkdraw.rewards import Reward, Sample, build_reward
from thinkdraw.runtime import Runtime
from thinkdraw.trainers.common import RunLog, accelerated, run_meta, run_steps
from thinkdraw.trainers.losses import adapt_entropy_coefficient, entropy, group_advantages, grpo_loss
from thinkdraw.trainers.sft import trainable_parameters

LORA_TARGETS = r"model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


class GRPOError(ThinkdrawError):
    """A run that cannot go on: a non-finite reward, loss or weight, or no batch with any signal."""


# -- rollouts ---------------------------------------------------------------------------------------------------


@dataclass
class Rollouts:
    """One batch's rollouts that carry signal (the rows of kept groups with a reward), ready for updates."""

    index: int  # the batch's number: its prompts and rollout seeds
    prompts: list[str]  # per kept row
    plan_ids: list[list[int]]  # per kept row, without the final boi
    boi_sampled: list[bool]  # per kept row: the plan ended by sampling boi (its log-prob is counted)
    image_ids: Tensor  # [K, N]
    old_logps: Tensor  # [K, W + N]: the sampler's log-probs, plan tokens in columns < W, image tokens after
    mask: Tensor  # [K, W + N] float: 1 on the tokens that count
    advantages: Tensor  # [K]
    ref_logps: Tensor | None  # [K, W + N] the reference policy's, when kl_beta > 0
    stats: dict[str, float]  # reward statistics of the whole batch

    @property
    def width(self) -> int:
        """W: the columns of plan tokens."""
        return self.old_logps.shape[1] - self.image_ids.shape[1]

    def rows(self, index: slice) -> Rollouts:
        pick = range(len(self.prompts))[index]
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


def batch_records(records: Sequence[dict], config: TrainGRPOConfig, index: int) -> tuple[list[dict], int]:
    """Batch `index`'s records (distinct) and its rollout seed, from a generator seeded by (seed, index) alone."""
    rng = random.Random(f"{config.seed}:{index}")
    return rng.sample(list(records), config.prompts_per_batch), rng.randrange(2**31)


def reward_stats(values: list[float | None], advantages: list[float | None], group_size: int) -> dict[str, float]:
    known = [v for v in values if v is not None]
    mean = sum(known) / len(known) if known else float("nan")
    std = (sum((v - mean) ** 2 for v in known) / len(known)) ** 0.5 if known else float("nan")
    groups = [advantages[i : i + group_size] for i in range(0, len(advantages), group_size)]
    return {
        "reward_mean": mean,
        "reward_std": std,
        "reward_none": 1 - len(known) / len(values),
        "groups_kept": float(sum(any(a is not None for a in g) for g in groups)),
    }


def pack(text: list[Tensor], image: Tensor, width: int) -> Tensor:
    """Per-row plan-token values (right-padded with 0 to `width`) then image-token values [K, N] -> [K, W + N]."""
    padded = [F.pad(t, (0, width - len(t))) for t in text]
    return torch.cat([torch.stack(padded) if padded else image.new_zeros(0, width), image], 1)


def make_rollouts(
    policy: Policy,
    records: Sequence[dict],
    reward: Reward,
    config: TrainGRPOConfig,
    index: int,
    step: int,
    reference: Policy | None = None,
) -> Rollouts:
    """Batch `index` (made for update `step`): sample, score, advantages, old log-probs. Its rows are those with
    an advantage: none at all when every group was dropped."""
    chosen, seed = batch_records(records, config, index)
    G = config.group_size
    candidates = policy.generate(
        [r["prompt"] for r in chosen], config.think, G, seed, config.sampling, reasoning=config.reasoning
    )
    rows = [record for record in chosen for _ in range(G)]
    samples = [Sample(r, c.image, c.plan, config.reasoning) for r, c in zip(rows, candidates, strict=True)]
    scores = reward(samples)
    if len(scores) != len(samples):
        raise GRPOError(f"step {step}: the reward gave {len(scores)} scores for {len(samples)} samples")
    values = [s.value for s in scores]
    for i, value in enumerate(values):
        if value is not None and not math.isfinite(value):
            raise GRPOError(
                f"step {step}: the reward is {value} (non-finite) for rollout {i} of batch {index} "
                f"({rows[i]['prompt']!r}: {scores[i].reason or 'no reason given'}); stopped, the last checkpoint stays"
            )
    advantages = group_advantages(values, G)
    kept = [i for i, a in enumerate(advantages) if a is not None]
    text = [candidates[i].plan_logprobs for i in kept]
    width = max((len(t) for t in text), default=0)
    image = torch.stack([candidates[i].image_logprobs for i in kept]) if kept else torch.zeros(0, 0)
    old_logps = pack(text, image, width)
    mask = pack([torch.ones_like(t) for t in text], torch.ones_like(image), width)
    device = policy.device
    rollouts = Rollouts(
        index,
        [rows[i]["prompt"] for i in kept],
        [candidates[i].plan_ids for i in kept],
        [candidates[i].boi_sampled for i in kept],
        torch.stack([candidates[i].image_tokens for i in kept]).to(device) if kept else torch.zeros(0, 0).long(),
        old_logps.to(device),
        mask.to(device),
        torch.tensor([advantages[i] for i in kept], dtype=old_logps.dtype, device=device),
        None,
        reward_stats(values, advantages, G),
    )
    if reference is not None and kept:
        with torch.no_grad():
            rollouts.ref_logps = token_logprobs(reference, rollouts, config).logps
    return rollouts


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


def token_logprobs(policy: Policy, rollouts: Rollouts, config: TrainGRPOConfig) -> TokenLogps:
    """The rows' log-probs under the distribution they were sampled from, differentiably: one forward over
    prompt + plan + boi + image (and the unconditional one when guided), then the sampler's processing
    (CFG on image logits, temperatures; as engine.sampling.teacher_forced_logprobs) and the entropies of it."""
    settings: SamplingSettings = config.sampling
    contexts = [policy.encode(p, config.think, config.reasoning) for p in rollouts.prompts]
    layout = policy.layout_of(rollouts.plan_ids)
    args = (policy.model, contexts, rollouts.plan_ids, rollouts.image_ids, policy.special)
    text_logits, image_logits = sequence_logits(*args, layout=layout)  # list of [T_i + 1, V_text], [K, N, V_img]
    image_logits = _float(image_logits)
    if settings.cfg_scale != 1.0:
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
    image_entropy = _entropy(image.flatten(0, 1))
    return TokenLogps(pack(text_logps, image_logps, rollouts.width), text_entropy, image_entropy)


# -- the loss of one micro-batch --------------------------------------------------------------------------------


@dataclass
class Shares:
    """A micro-batch's share of its batch, per average the loss takes: rows (sequence level), counted tokens
    (token level), plan tokens and image tokens (the entropies)."""

    loss: float
    text: float
    image: float


def shares(micro: Rollouts, whole: Rollouts, level: str) -> Shares:
    W = whole.width

    def ratio(part: Tensor, total: Tensor) -> float:
        return part.sum().item() / max(1.0, total.sum().item())

    loss = len(micro.prompts) / len(whole.prompts) if level == "sequence" else ratio(micro.mask, whole.mask)
    return Shares(loss, ratio(micro.mask[:, :W], whole.mask[:, :W]), ratio(micro.mask[:, W:], whole.mask[:, W:]))


def _finite(value: Tensor, what: str, step: int) -> None:
    if not torch.isfinite(value).all():
        raise GRPOError(f"step {step}: {what} is non-finite ({value.item():g}); stopped, the last checkpoint stays")


def policy_loss(
    policy: Policy,
    micro: Rollouts,
    share: Shares,
    coefficients: tuple[float, float],
    config: TrainGRPOConfig,
    step: int,
) -> tuple[Tensor, dict[str, float]]:
    """A micro-batch's share of the update's loss, and its metrics (additive over the micro-batches)."""
    now = token_logprobs(policy, micro, config)
    out = grpo_loss(
        now.logps,
        micro.old_logps,
        micro.advantages,
        micro.mask,
        clip=config.ratio_clip,
        ref_logps=micro.ref_logps,
        kl_beta=config.kl_beta,
        level=config.level,
    )
    _finite(out.loss, "the GRPO loss", step)
    c_text, c_image = coefficients
    loss = out.loss * share.loss
    if config.entropy:
        _finite(now.text_entropy, "the plan-token entropy", step)
        _finite(now.image_entropy, "the image-token entropy", step)
        loss = loss - c_text * now.text_entropy * share.text - c_image * now.image_entropy * share.image
    deviation = ((now.logps - micro.old_logps).exp() - 1).abs() * micro.mask
    metrics = {
        "loss": loss.item(),
        "kl": out.metrics["kl"] * share.loss,
        "clip_fraction": out.metrics["clip_fraction"] * share.loss,
        "entropy_text": now.text_entropy.item() * share.text,
        "entropy_image": now.image_entropy.item() * share.image,
        "ratio_max": deviation.max().item() if deviation.numel() else 0.0,  # max |ratio - 1|: taken, not summed
    }
    return loss, metrics


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


def add_lora(policy: Policy, config: TrainGRPOConfig) -> list[torch.nn.Parameter]:
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


# -- the run ----------------------------------------------------------------------------------------------------


def grpo_reward(config: TrainGRPOConfig, detector=None, judges: Mapping[str, object] | None = None) -> Reward:
    """The reward of config.reward; a judged one loads config.judge (a name in `judges`, else a folder, hub id
    or url) with thinkdraw.judges.load.load_judge."""
    judge = None
    if config.needs_judge:
        from thinkdraw.judges.load import load_judge

        device = Runtime.create(config.device, "float32", config.threads).device
        judge = load_judge(str((judges or {}).get(config.judge, config.judge)), device=device)
    return build_reward(config.reward, judge, detector, config.judged_by)


@dataclass
class RunState:
    """Where the run stands besides weights and optimizer (saved in thinkdraw.json, the batch's tensors beside)."""

    next_batch: int = 0  # the number of the next batch to make
    batch: Rollouts | None = None  # the batch being trained on
    first_step: int = 0  # the update that made it
    coefficients: tuple[float, float] = (0.0, 0.0)  # entropy coefficients (text, image) for update coefficient_step
    coefficient_step: int = 0
    measured: tuple[int, float, float] | None = None  # (step, H_text, H_image) of the last update's loss


def train_grpo(
    config: TrainGRPOConfig,
    records: Sequence[dict],
    reward: Reward,
    echo: Callable[[str], None] = print,
    meta: dict | None = None,
) -> Policy:
    """GRPO from config.init (or, with config.resume, from config.out/checkpoint) on prompts drawn from
    `records` (GenEval-style dicts, "prompt" at least: what the reward reads as Sample.metadata). `meta` goes into
    every checkpoint's thinkdraw.json (the environment, say)."""
    if len(records) < config.prompts_per_batch:
        raise GRPOError(f"{len(records)} records: fewer than --prompts-per-batch {config.prompts_per_batch}")
    runtime = Runtime.create(config.device, "float32", config.threads)
    torch.manual_seed(config.seed)
    checkpoint = config.out / "checkpoint"
    saved = read_meta(checkpoint) if config.resume else None
    if saved and (saved.get("kind") != "policy-grpo" or saved["run_config"]["lora_rank"] != config.lora_rank):
        raise GRPOError(
            f"--resume: {checkpoint} is not from a GRPO run with --lora-rank {config.lora_rank} "
            f"(it is a {saved.get('kind')!r} checkpoint, lora rank {saved.get('run_config', {}).get('lora_rank')})"
        )
    if config.lora_rank:  # the base never trains: always config.init, the adapters restored from the checkpoint
        policy = Policy.load(config.init, runtime)
        params = add_lora(policy, config)
    else:
        policy = Policy.load(checkpoint if saved else config.init, runtime)
        params = trainable_parameters(policy.model)
    policy.model.eval()  # no dropout: see the module docstring
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=(0.9, 0.95), weight_decay=0.0)
    state, first = RunState(), 0
    if saved:
        extra = load_trainer_state(checkpoint, optimizer)
        if config.lora_rank:
            with torch.no_grad():
                for name, param in lora_tensors(policy.model).items():
                    param.copy_(extra[name])
        info = saved["grpo"]
        first = saved["step"]
        state.next_batch, state.first_step = info["next_batch"], info["first_step"]
        state.coefficients, state.coefficient_step = tuple(info["coefficients"]), first
        if info["batch"] is not None:
            state.batch = rollouts_from_state(info["batch"], extra, runtime.device)
    accelerator, policy.model, optimizer = accelerated(policy.model, optimizer, runtime)
    reference = None
    if config.kl_beta:
        reference = Policy.load(config.init, runtime)
        reference.model.requires_grad_(False)
    log = RunLog(config.out, echo, config.max_minutes)
    M = config.updates_per_batch

    def rollouts_for(step: int) -> Rollouts:
        """The batch update `step` trains on: the cached one for its remaining updates, else the next batch
        that has signal."""
        if state.batch is not None and step < state.first_step + M:
            return state.batch
        for _ in range(config.max_skipped + 1):
            index = state.next_batch
            batch = make_rollouts(policy, records, reward, config, index, step, reference)
            state.next_batch = index + 1
            if batch.prompts:
                state.batch, state.first_step = batch, step
                return batch
            log.write({"step": step, "batch": index, "skipped": 1, **batch.stats})
        raise GRPOError(
            f"step {step}: {config.max_skipped + 1} batches in a row without signal (every group's rewards equal): "
            "the reward is too hard or too easy for this policy; try a larger --group-size or --temperature"
        )

    def coefficients_for(step: int) -> tuple[float, float]:
        """The entropy coefficients of update `step`: adapted once from the entropies measured in the update
        before, when that one was taken in this process (a resumed run starts from the saved ones)."""
        if config.entropy and state.coefficient_step < step and state.measured and state.measured[0] == step - 1:
            _, h_text, h_image = state.measured
            c_text, c_image = state.coefficients
            state.coefficients = (
                adapt_entropy_coefficient(
                    c_text, h_text, config.entropy_text_target, config.entropy_text_step, config.entropy_text_limit
                )
                if config.think  # no plan tokens, no text entropy to track
                else c_text,
                adapt_entropy_coefficient(
                    c_image, h_image, config.entropy_image_target, config.entropy_image_step, config.entropy_image_limit
                ),
            )
        state.coefficient_step = step
        return state.coefficients

    parts: dict[str, float] = {}  # the current update's entropies and max ratio deviation, over its micro-batches

    def loss_fn(step: int, micro: int) -> tuple[Tensor, dict]:
        batch = rollouts_for(step)
        coefficients = coefficients_for(step)
        if micro == 0:
            parts.clear()
        rows = batch.rows(row_slices(len(batch.prompts), config.accumulation)[micro])
        if not rows.prompts:  # fewer kept rows than micro-batches
            loss, metrics = torch.zeros((), requires_grad=True), {}
        else:
            loss, metrics = policy_loss(policy, rows, shares(rows, batch, config.level), coefficients, config, step)
        for key in ("entropy_text", "entropy_image"):
            parts[key] = parts.get(key, 0.0) + metrics.get(key, 0.0)
        parts["ratio_max"] = max(parts.get("ratio_max", 0.0), metrics.pop("ratio_max", 0.0))
        if micro == config.accumulation - 1:
            state.measured = (step, parts["entropy_text"], parts["entropy_image"])
            metrics["ratio_max"] = parts["ratio_max"]
        if micro == 0:  # once per update (metrics add up over micro-batches)
            c_text, c_image = coefficients
            metrics.update(batch.stats, batch=float(batch.index), coef_text=c_text, coef_image=c_image)
        return loss, metrics

    def save(done: int) -> None:
        for param in params:
            if not torch.isfinite(param).all():
                raise GRPOError(f"the weights are non-finite after update {done}: not saved, the last checkpoint stays")
        in_batch = state.batch is not None and done < state.first_step + M
        info, tensors = rollouts_state(state.batch) if in_batch else (None, {})
        grpo = {
            "next_batch": state.next_batch,
            "first_step": state.first_step,
            "coefficients": list(coefficients_for(done)),
            "batch": info,
        }
        model = policy.model
        if config.lora_rank:
            tensors.update(lora_tensors(model))
            model = MergedModel(model)
        info_meta = {**run_meta("policy-grpo", done, config), **(meta or {}), "grpo": grpo}
        save_checkpoint(checkpoint, model, info_meta, optimizer, tokenizer=policy.tokenizer, extra=tensors)

    try:
        run_steps(first, config, optimizer, accelerator, params, loss_fn, save, log, log_every=1)
    finally:
        log.close()
    return policy
