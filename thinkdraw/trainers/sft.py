"""Supervised training of a policy: stage `base` (prompt -> image, like Janus-Pro before any reasoning) and
stage `sft` (prompt -> reasoning -> image, ReasonGen-R1's recipe), over any source of examples.

Loss: `weighted_cross_entropy` (thinkdraw.trainers.losses): reasoning tokens (and the [boi] that ends them)
weighted `text_weight` (2.0), image tokens `image_weight` (1.0). A share `drop_rate` (10%) of rows has
prompt and reasoning replaced by [pad] to train the unconditional branch of CFG exactly as the engine
builds it at sampling time; those rows carry image loss only.

SFT starts by giving the text head weights of its own (`untie_text_head`): a base policy may be built with
them tied to the input embedding, as it never writes text.

lr -> forward -> backward -> clip -> step -> log -> save: the trainers' shared loop (`run_steps`), with
gradient accumulation over micro-batches. Batches are drawn from a generator seeded by (seed, step), so a
resumed run sees the batches it would have.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

import torch
from PIL import Image
from transformers import JanusForConditionalGeneration

from thinkdraw.checkpoint import load_trainer_state, read_meta, save_checkpoint
from thinkdraw.configs import TrainPolicyConfig
from thinkdraw.engine.sampling import sequence_logits
from thinkdraw.policy.formats import Revision
from thinkdraw.policy.model import Policy, untie_text_head
from thinkdraw.policy.vq import encode_images
from thinkdraw.runtime import Runtime
from thinkdraw.trainers.common import RunLog, accelerated, run_meta, run_steps
from thinkdraw.trainers.losses import LossOutput, count_tokens, micro_batches, weighted_cross_entropy


@dataclass(frozen=True)
class Example:
    prompt: str
    reasoning: str  # the plan the image follows
    image: Image.Image
    rationale: str | None = None  # a written rationale the image follows too (None: none for this example)
    revision: Revision | None = None  # a second try: the reasoning is the fix of this flawed plan and feedback


class ExampleSource(Protocol):
    """Where training examples come from (the shapes world: `thinkdraw.world.data.WorldExamples`)."""

    name: str  # recorded in checkpoints as their environment

    def example(self, rng: random.Random, with_errors: bool) -> Example:
        """One example; with_errors: the source may give reasoning with a mistake the image follows."""
        ...


@dataclass
class Batch:
    contexts: list[list[int]]  # the prompt in the policy's format (+ think), or [bos] + pads when dropped
    plans: list[list[int]]  # reasoning tokens, [] when the row draws directly, pads when dropped
    image_ids: torch.Tensor  # [B, N]
    text_rows: list[bool]  # rows whose reasoning tokens (and [boi]) carry loss

    def rows(self, index: slice) -> Batch:
        pick = range(len(self.contexts))[index]
        return Batch(
            [self.contexts[i] for i in pick],
            [self.plans[i] for i in pick],
            self.image_ids[index],
            [self.text_rows[i] for i in pick],
        )


def unconditional(policy: Policy, context: list[int], plan: list[int]) -> tuple[list[int], list[int]]:
    """A row's context and plan as CFG's unconditional branch sees them: bos, then pads of the same length."""
    pad = policy.special.pad
    return [context[0]] + [pad] * (len(context) - 1), [pad] * len(plan)


def make_batch(policy: Policy, source: ExampleSource, config: TrainPolicyConfig, step: int) -> Batch:
    rng = random.Random(f"{config.seed}:{step}")
    think_rate = config.think_rate if config.stage == "sft" else 0.0
    examples = [source.example(rng, with_errors=config.stage == "sft") for _ in range(config.batch_size)]
    image_ids = encode_images(policy.model.model.vqmodel, [e.image for e in examples])
    contexts, plans, text_rows = [], [], []
    for example in examples:
        think = rng.random() < think_rate
        rationale = think and example.rationale is not None and rng.random() < config.rationale_rate
        reasoning = "rationale" if rationale else "plan"
        revision = example.revision if think and not rationale else None
        context = policy.encode(example.prompt, think, reasoning, revision)
        plan = policy.plan_ids(example.rationale if rationale else example.reasoning) if think else []
        dropped = rng.random() < config.drop_rate
        if dropped:
            context, plan = unconditional(policy, context, plan)
        contexts.append(context)
        plans.append(plan)
        text_rows.append(think and not dropped)
    return Batch(contexts, plans, image_ids, text_rows)


def text_targets(policy: Policy, batch: Batch) -> list[torch.Tensor | None]:
    """Per row, the reasoning tokens and the [boi] that ends them, or None for a row without text loss."""
    device = batch.image_ids.device
    return [
        torch.tensor(plan + [policy.special.boi], device=device) if used else None
        for plan, used in zip(batch.plans, batch.text_rows, strict=True)
    ]


def policy_loss(policy: Policy, batch: Batch, config: TrainPolicyConfig, totals=None) -> LossOutput:
    """The SFT loss of a batch (or, with the step's `totals`, a micro-batch's share of it)."""
    with torch.autocast(batch.image_ids.device.type, dtype=torch.bfloat16, enabled=config.bf16):
        text_logits, image_logits = sequence_logits(
            policy.model,
            batch.contexts,
            batch.plans,
            batch.image_ids,
            policy.special,
            layout=policy.layout_of(batch.plans),
        )  # list of [len(plan) + 1, V_text], [B, N, V_image]
    targets = text_targets(policy, batch)
    return weighted_cross_entropy(
        text_logits, targets, image_logits, batch.image_ids, config.text_weight, config.image_weight, totals
    )


def trainable_parameters(model: JanusForConditionalGeneration) -> list[torch.nn.Parameter]:
    """Everything but the frozen VQ and the understanding encoder (drawing never uses it)."""
    frozen = ("model.vqmodel.", "model.vision_model.", "model.aligner.")
    params = []
    for name, param in model.named_parameters():
        param.requires_grad_(not name.startswith(frozen))
        if param.requires_grad:
            params.append(param)
    return params


def train_policy(config: TrainPolicyConfig, source: ExampleSource, start: Policy | None = None, echo=print) -> Policy:
    """Train from `start` (a new policy, for stage base), else from config.init (sft), or resume."""
    runtime = Runtime.create(config.device, "float32", config.threads)
    torch.manual_seed(config.seed)
    checkpoint = config.out / "checkpoint"
    if config.resume:
        policy, first = Policy.load(checkpoint), read_meta(checkpoint)["step"]
    else:
        policy, first = (start or Policy.load(config.init)), 0
        if config.stage == "sft":
            untie_text_head(policy.model)
    policy.model.train()
    params = trainable_parameters(policy.model)
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=(0.9, 0.95), weight_decay=0.01)
    if config.resume:
        load_trainer_state(checkpoint, optimizer)
    accelerator, policy.model, optimizer = accelerated(policy.model, optimizer, runtime)
    log = RunLog(config.out, echo, config.max_minutes)
    slices = micro_batches(config.batch_size, config.accumulation)
    current: dict[int, Batch] = {}  # the step's whole batch, made once for its micro-batches

    def save(step: int) -> None:
        meta = {**run_meta(f"policy-{config.stage}", step, config), "environment": source.name}
        save_checkpoint(checkpoint, policy.model, meta, optimizer, tokenizer=policy.tokenizer)

    def loss_fn(step: int, micro: int) -> tuple[torch.Tensor, dict]:
        if step not in current:
            current.clear()
            current[step] = make_batch(policy, source, config, step)
        batch = current[step]
        totals = count_tokens(text_targets(policy, batch), batch.image_ids)
        out = policy_loss(policy, batch.rows(slices[micro]), config, totals)
        return out.loss, out.metrics

    run_steps(first, config, optimizer, accelerator, params, loss_fn, save, log, log_every=25)
    policy.model.eval()
    return policy
