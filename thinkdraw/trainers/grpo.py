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

With plan_only (--plan-only), rollouts stop at [boi]: only the plan's tokens (boi included) are sampled, scored
by a reward that reads the plan alone (plan, sem, spa) and trained; no image is drawn, no image token counts, and
an update costs a forward over prompt and plan only. On the world model (2-core CPU, CFG 2) a plan-only run took 120
batches of 128 rollouts (240 updates) in 18.3 minutes, a full one 85 batches of 32 in 45: 14x the rollouts a
minute.

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

Non-finite rewards, losses or weights stop the run with a RunError naming what and where; the last checkpoint
written stays as it was (nothing is saved on that path). `max_skipped` + 1 batches in a row without signal stop
it too, but their weights are sound: the updates taken are saved first (StopSaved).

The model stays in eval mode throughout: dropout would make the ratio compare two different distributions.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from thinkdraw.checkpoint import load_trainer_state, save_checkpoint
from thinkdraw.configs import TrainGRPOConfig
from thinkdraw.policy.model import Policy
from thinkdraw.rewards import Reward
from thinkdraw.runtime import Runtime
from thinkdraw.trainers.common import RunLog, StopSaved, accelerated, run_meta, run_steps
from thinkdraw.trainers.losses import adapt_entropy_coefficient, group_advantages, grpo_loss
from thinkdraw.trainers.rollouts import (
    HeldOut,
    Rollouts,
    RunError,
    check_finite,
    held_out_metrics,
    loss_forward,
    model_to_save,
    restore_adapters,
    rollouts_from_state,
    rollouts_of,
    rollouts_state,
    row_slices,
    sample_scored,
    saved_run,
    token_logprobs,
    trainable_policy,
)

# -- rollouts ---------------------------------------------------------------------------------------------------


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
    candidates, values = sample_scored(
        policy, chosen, reward, config, G, seed, step, f"batch {index}", plan_only=config.plan_only
    )
    advantages = group_advantages(values, G)
    kept = [i for i, a in enumerate(advantages) if a is not None]
    rollouts = rollouts_of(
        [candidates[i] for i in kept],
        [advantages[i] for i in kept],
        index,
        reward_stats(values, advantages, G),
        policy.device,
        config.plan_only,
    )
    if reference is not None and kept:
        with torch.no_grad():
            rollouts.ref_logps = token_logprobs(reference, rollouts, config).logps
    return rollouts


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


def policy_loss(
    policy: Policy,
    micro: Rollouts,
    share: Shares,
    coefficients: tuple[float, float],
    config: TrainGRPOConfig,
    step: int,
) -> tuple[Tensor, dict[str, float]]:
    """A micro-batch's share of the update's loss, and its metrics (additive over the micro-batches)."""
    with loss_forward(policy, config):
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
    check_finite(out.loss, "the GRPO loss", step)
    c_text, c_image = coefficients
    loss = out.loss * share.loss
    if config.entropy:
        check_finite(now.text_entropy, "the plan-token entropy", step)
        check_finite(now.image_entropy, "the image-token entropy", step)
        loss = loss - c_text * now.text_entropy * share.text - c_image * now.image_entropy * share.image
    deviation = ((now.logps - micro.old_logps).exp() - 1).abs() * micro.mask
    metrics = {
        "loss": loss.item(),
        "kl": out.metrics["kl"] * share.loss,
        "clip_fraction": out.metrics["clip_fraction"] * share.loss,
        "entropy_text": now.text_entropy.item() * share.text,
        "entropy_image": now.image_entropy.item() * share.image,
        "ratio_max": deviation.max().item() if deviation.numel() else 0.0,  # max |ratio - 1| (a _max: not summed)
    }
    return loss, metrics


# -- the run ----------------------------------------------------------------------------------------------------


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
    held_out: HeldOut | None = None,
) -> Policy:
    """GRPO from config.init (or, with config.resume, from config.out/checkpoint) on prompts drawn from
    `records` (GenEval-style dicts, "prompt" at least: what the reward reads as Sample.metadata). `meta` goes into
    every checkpoint's thinkdraw.json (the environment, say); `held_out`: prompts scored every so many updates."""
    if len(records) < config.prompts_per_batch:
        raise RunError(f"{len(records)} records: fewer than --prompts-per-batch {config.prompts_per_batch}")
    runtime = Runtime.create(config.device, "float32", config.threads)
    torch.manual_seed(config.seed)
    checkpoint = config.out / "checkpoint"
    saved = saved_run(config, checkpoint, "policy-grpo")
    policy, params = trainable_policy(config, checkpoint, bool(saved), runtime)
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=(0.9, 0.95), weight_decay=0.0)
    state, first = RunState(), 0
    if saved:
        extra = load_trainer_state(checkpoint, optimizer)
        if config.lora_rank:
            restore_adapters(policy.model, extra)
        info = saved["grpo"]
        first = saved["step"]
        state.next_batch, state.first_step = info["next_batch"], info["first_step"]
        state.coefficients, state.coefficient_step = tuple(info["coefficients"]), first
        if info["batch"] is not None:
            state.batch = rollouts_from_state(info["batch"], extra, runtime.device)
    accelerator, policy.model, optimizer = accelerated(policy.model, optimizer, runtime)
    if config.entropy and accelerator.num_processes > 1:
        raise RunError("--entropy adapts its coefficients in one process: run it without accelerate launch")
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
        raise StopSaved(
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

    parts: dict[str, float] = {}  # the current update's entropies, over its micro-batches

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
        if micro == config.accumulation - 1:
            state.measured = (step, parts["entropy_text"], parts["entropy_image"])
        if micro == 0:  # once per update (metrics add up over micro-batches)
            c_text, c_image = coefficients
            metrics.update(batch.stats, batch=float(batch.index), coef_text=c_text, coef_image=c_image)
            metrics.update(held_out_metrics(policy, held_out, config, step))
        return loss, metrics

    def save(done: int) -> None:
        for param in params:
            if not torch.isfinite(param).all():
                raise RunError(f"the weights are non-finite after update {done}: not saved, the last checkpoint stays")
        in_batch = state.batch is not None and done < state.first_step + M
        info, tensors = rollouts_state(state.batch) if in_batch else (None, {})
        grpo = {
            "next_batch": state.next_batch,
            "first_step": state.first_step,
            "coefficients": list(coefficients_for(done)),
            "batch": info,
        }
        model = model_to_save(policy.model, config.lora_rank, tensors)
        info_meta = {**run_meta("policy-grpo", done, config), **(meta or {}), "grpo": grpo}
        save_checkpoint(checkpoint, model, info_meta, optimizer, tokenizer=policy.tokenizer, extra=tensors)

    try:
        run_steps(first, config, optimizer, accelerator, params, loss_fn, save, log, log_every=1)
    finally:
        log.close()
    return policy
