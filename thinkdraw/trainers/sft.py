"""Supervised training of the world policy: stage `base` (prompt -> image, like Janus-Pro
before any reasoning) and stage `sft` (prompt -> plan -> image, ReasonGen-R1's recipe).

Loss: token-weighted cross-entropy, plan tokens (and the [boi] that ends a plan) weighted
`text_weight` (2.0), image tokens `image_weight` (1.0). A share `drop_rate` (10%) of rows
has prompt and plan replaced by [pad] to train the unconditional branch of CFG exactly as
the engine builds it at sampling time; those rows carry image loss only.

SFT starts by giving the text head weights of its own (`untie_text_head`): the base policy is built
with them tied to the input embedding, as it never writes text.

lr -> forward -> backward -> clip -> step -> log -> save: the trainers' shared loop (`run_steps`). Batches are drawn
from a generator seeded by (seed, step), so a resumed run sees the batches it would have.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import JanusForConditionalGeneration, JanusVQVAE

from thinkdraw.checkpoint import load_model, load_trainer_state, read_meta, save_checkpoint
from thinkdraw.configs import TrainPolicyConfig
from thinkdraw.engine.sampling import sequence_logits
from thinkdraw.policy.model import Policy, new_world_policy, untie_text_head
from thinkdraw.policy.vq import encode_images
from thinkdraw.trainers.common import RunLog, accelerated, run_meta, run_steps
from thinkdraw.trainers.data import world_example
from thinkdraw.world.render import render_image
from thinkdraw.world.splits import load_split


@dataclass
class Batch:
    contexts: list[list[int]]  # [bos] prompt (+ [think]), or [bos] + pads when dropped
    plans: list[list[int]]  # plan tokens, [] when the row draws directly, pads when dropped
    image_ids: torch.Tensor  # [B, N]
    text_rows: list[bool]  # rows whose plan tokens (and [boi]) carry loss


def unconditional(policy: Policy, context: list[int], plan: list[int]) -> tuple[list[int], list[int]]:
    """A row's context and plan as CFG's unconditional branch sees them: bos, then pads of the same length."""
    return [context[0]] + [policy.ids.pad] * (len(context) - 1), [policy.ids.pad] * len(plan)


def make_batch(policy: Policy, records: list[dict], config: TrainPolicyConfig, step: int) -> Batch:
    rng = random.Random(f"{config.seed}:{step}")
    think_rate = config.think_rate if config.stage == "sft" else 0.0
    error_rate = config.error_rate if config.stage == "sft" else 0.0
    examples = [world_example(rng.choice(records), rng, error_rate) for _ in range(config.batch_size)]
    image_ids = encode_images(policy.model.model.vqmodel, [render_image(e.objects) for e in examples])
    contexts, plans, text_rows = [], [], []
    for example in examples:
        think = rng.random() < think_rate
        context = policy.encode(example.prompt, think)
        plan = policy.plan_ids(example.plan) if think else []
        dropped = rng.random() < config.drop_rate
        if dropped:
            context, plan = unconditional(policy, context, plan)
        contexts.append(context)
        plans.append(plan)
        text_rows.append(think and not dropped)
    return Batch(contexts, plans, image_ids, text_rows)


def policy_loss(
    policy: Policy, batch: Batch, text_weight: float, image_weight: float, bf16: bool = False
) -> tuple[torch.Tensor, dict]:
    """Token-weighted cross-entropy over plan (+ [boi]) and image tokens; returns (loss, detached metrics).
    bf16: the forward under bfloat16 autocast (the weights and the loss stay float32)."""
    with torch.autocast(batch.image_ids.device.type, dtype=torch.bfloat16, enabled=bf16):
        text_logits, image_logits = sequence_logits(
            policy.model, batch.contexts, batch.plans, batch.image_ids, policy.special
        )  # list of [len(plan) + 1, V_text], [B, N, V_image]
    text_logits, image_logits = [t.float() for t in text_logits], image_logits.float()
    image_ce = F.cross_entropy(image_logits.flatten(0, 1), batch.image_ids.flatten(), reduction="sum")
    n_image = batch.image_ids.numel()
    text_ce = image_ce.new_zeros(())
    n_text = 0
    for logits, plan, used in zip(text_logits, batch.plans, batch.text_rows, strict=True):
        if used:
            target = torch.tensor(plan + [policy.ids.boi], device=logits.device)
            text_ce = text_ce + F.cross_entropy(logits, target, reduction="sum")
            n_text += len(target)
    loss = (text_weight * text_ce + image_weight * image_ce) / (text_weight * n_text + image_weight * n_image)
    metrics = {"loss": loss.item(), "image_ce": image_ce.item() / n_image, "text_ce": text_ce.item() / max(1, n_text)}
    return loss, metrics


def trainable_parameters(model: JanusForConditionalGeneration) -> list[torch.nn.Parameter]:
    """Everything but the frozen VQ and the understanding encoder (drawing never uses it)."""
    frozen = ("model.vqmodel.", "model.vision_model.", "model.aligner.")
    params = []
    for name, param in model.named_parameters():
        param.requires_grad_(not name.startswith(frozen))
        if param.requires_grad:
            params.append(param)
    return params


def train_policy(config: TrainPolicyConfig, echo=print) -> Policy:
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    checkpoint = config.out / "checkpoint"
    if config.resume:
        policy, start = Policy.load(checkpoint), read_meta(checkpoint)["step"]
    elif config.stage == "base":
        policy, start = new_world_policy(load_model(JanusVQVAE, config.init), config.hidden, config.layers), 0
    else:
        policy, start = Policy.load(config.init), 0
        untie_text_head(policy.model)
    policy.model.train()
    params = trainable_parameters(policy.model)
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=(0.9, 0.95), weight_decay=0.01)
    if config.resume:
        load_trainer_state(checkpoint, optimizer)
    accelerator, policy.model, optimizer = accelerated(policy.model, optimizer)
    records = load_split("train")
    log = RunLog(config.out, echo, config.max_minutes)

    def save(step: int) -> None:
        meta = run_meta(f"policy-{config.stage}", step, config)
        save_checkpoint(checkpoint, policy.model, meta, optimizer, tokenizer=policy.tokenizer)

    def loss_fn(step: int) -> tuple[torch.Tensor, dict]:
        batch = make_batch(policy, records, config, step)
        return policy_loss(policy, batch, config.text_weight, config.image_weight, config.bf16)

    run_steps(start, config, optimizer, accelerator, params, loss_fn, save, log, log_every=25)
    policy.model.eval()
    return policy
