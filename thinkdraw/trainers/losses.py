"""Training losses: small standalone functions that take logits, targets and weights, and return the loss and
detached metrics. Each says which paper it follows and where we depart from it.

Gradient accumulation: a step's batch may be split into micro-batches. A loss given `totals` (the token
counts of the whole step's batch) divides by them instead of its own, so the micro-batches' losses and
metrics add up to exactly those of the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class LossOutput:
    loss: Tensor  # scalar, differentiable
    metrics: dict[str, float]  # detached; additive over the micro-batches of a step


@dataclass(frozen=True)
class TokenCounts:
    text: int
    image: int


def count_tokens(text_targets: list[Tensor | None], image_targets: Tensor) -> TokenCounts:
    return TokenCounts(sum(len(t) for t in text_targets if t is not None), image_targets.numel())


def weighted_cross_entropy(
    text_logits: list[Tensor],
    text_targets: list[Tensor | None],
    image_logits: Tensor,
    image_targets: Tensor,
    text_weight: float = 2.0,
    image_weight: float = 1.0,
    totals: TokenCounts | None = None,
) -> LossOutput:
    """Token-weighted cross-entropy over reasoning and image tokens (ReasonGen-R1's SFT: weight 2.0 on text
    tokens, 1.0 on image tokens), normalised by the weighted token count.

    text_logits: per row [T_i, V_text]; text_targets: per row [T_i] long, or None for a row without text loss
    (drawn directly, or CFG's dropped row). image_logits [B, N, V_img], image_targets [B, N].
    Metrics: loss, text_ce and image_ce (nats per token)."""
    totals = totals or count_tokens(text_targets, image_targets)
    image_sum = F.cross_entropy(image_logits.flatten(0, 1).float(), image_targets.flatten(), reduction="sum")
    text_sum = image_sum.new_zeros(())
    for logits, target in zip(text_logits, text_targets, strict=True):
        if target is not None:
            text_sum = text_sum + F.cross_entropy(logits.float(), target, reduction="sum")
    denominator = text_weight * totals.text + image_weight * totals.image
    loss = (text_weight * text_sum + image_weight * image_sum) / denominator
    metrics = {
        "loss": loss.item(),
        "text_ce": text_sum.item() / max(1, totals.text),
        "image_ce": image_sum.item() / max(1, totals.image),
    }
    return LossOutput(loss, metrics)


def answer_cross_entropy(logits: Tensor, labels: Tensor, rows: int | None = None, ignore: int = -100) -> LossOutput:
    """A chat judge's loss on its answers: each row's mean cross-entropy over its scored tokens, then the mean over
    rows, so an example counts the same whether its answer is "yes" or a list of boxes. transformers' own loss
    (the mean over every scored token of the batch) lets a long answer outweigh a dozen yes/no answers, which are
    what the judge is used for. logits [B, T, V] at input positions; labels [B, T], `ignore` where not scored,
    predicted one position later (a causal LM's shift). rows: the whole step's row count, when this is one of
    its micro-batches (the shares add up). Metrics: answer_ce (nats per token, row-averaged)."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]  # [B, T-1, V], [B, T-1]
    scored = labels != ignore
    ce = F.cross_entropy(logits.transpose(1, 2), labels.masked_fill(~scored, 0), reduction="none")  # [B, T-1]
    per_row = (ce * scored).sum(1) / scored.sum(1).clamp(min=1)  # [B]
    loss = per_row.sum() / (rows or len(per_row))
    return LossOutput(loss, {"answer_ce": loss.item()})


def micro_batches(size: int, accumulation: int) -> list[slice]:
    """The row slices of `accumulation` equal micro-batches of a batch of `size` rows."""
    if accumulation < 1 or size % accumulation:
        raise ValueError(f"a batch of {size} does not split into {accumulation} equal micro-batches")
    step = size // accumulation
    return [slice(i, i + step) for i in range(0, size, step)]


def dpo_loss(
    policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, beta: float = 0.1
) -> LossOutput:
    """DPO's sigmoid loss (Rafailov et al.; TRL's `sigmoid` loss type): -log sigmoid(beta * (chosen margin -
    rejected margin)), a margin being the policy's log-prob minus the reference's. Inputs are per-pair sequence
    log-probs [P] (summed over image tokens, and plan tokens where the caller includes them; "verify and
    reinforce" sums over image tokens, beta 0.1). Metrics: loss, the implicit rewards beta * margin, and the
    share of pairs the policy already orders right."""
    chosen = beta * (policy_chosen - ref_chosen)
    rejected = beta * (policy_rejected - ref_rejected)
    loss = -F.logsigmoid(chosen - rejected).mean()
    metrics = {
        "loss": loss.item(),
        "reward_chosen": chosen.mean().item(),
        "reward_rejected": rejected.mean().item(),
        "reward_accuracy": (chosen > rejected).float().mean().item(),
    }
    return LossOutput(loss, metrics)


def group_advantages(rewards: list[float | None], group_size: int, eps: float = 1e-4) -> list[float | None]:
    """GRPO's advantages: each reward minus its group's mean, over the group's standard deviation (population, as
    DeepSeekMath; TRL uses the sample std). A None reward (not applicable) is left out of its group's baseline
    and gets None; a group whose rewards are all equal carries no signal and is dropped (None for every member,
    ReasonGen-R1's choice), as is a group with fewer than two rewards."""
    if len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards do not split into groups of {group_size}")
    advantages: list[float | None] = []
    for start in range(0, len(rewards), group_size):
        group = rewards[start : start + group_size]
        known = [r for r in group if r is not None]
        mean = sum(known) / max(1, len(known))
        std = (sum((r - mean) ** 2 for r in known) / max(1, len(known))) ** 0.5
        if len(known) < 2 or std <= eps:
            advantages += [None] * len(group)
        else:
            advantages += [None if r is None else (r - mean) / (std + eps) for r in group]
    return advantages


def grpo_loss(
    logps: Tensor,
    old_logps: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip: float = 0.2,
    ref_logps: Tensor | None = None,
    kl_beta: float = 0.0,
    level: str = "token",
) -> LossOutput:
    """GRPO's clipped surrogate (Shao et al.; TRL's GRPOTrainer): per token, -min(ratio * A, clip(ratio, 1 - e,
    1 + e) * A), ratio = exp(logps - old_logps) under the distribution that was sampled (CFG included when it was
    on); plus kl_beta times the k3 estimate of KL to a frozen reference, exp(ref - logp) - (ref - logp) - 1.

    logps, old_logps, ref_logps, mask: [B, T] (mask 1 on the tokens that count: plan and image tokens);
    advantages [B]. level "token": the mean over every counted token of the batch (DAPO's, TRL's default);
    "sequence": the mean over each sequence's tokens, then over sequences (the GRPO paper's). Several updates per
    batch: pass the logps the batch was sampled with as old_logps each time."""
    if level not in ("token", "sequence"):
        raise ValueError(f"level {level!r}: choose token or sequence")
    mask = mask.to(logps.dtype)
    ratio = torch.exp(logps - old_logps)
    A = advantages[:, None]
    per_token = -torch.minimum(ratio * A, ratio.clamp(1 - clip, 1 + clip) * A)  # [B, T]
    kl = torch.zeros_like(per_token)
    if ref_logps is not None and kl_beta:
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + kl_beta * kl
    loss = _average(per_token, mask, level)
    clipped = ((ratio - 1).abs() > clip).to(logps.dtype)
    metrics = {
        "loss": loss.item(),
        "kl": _average(kl, mask, level).item(),
        "clip_fraction": _average(clipped, mask, level).item(),
    }
    return LossOutput(loss, metrics)


def _average(x: Tensor, mask: Tensor, level: str) -> Tensor:
    if level == "token":
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return ((x * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


def entropy(logits: Tensor, mask: Tensor) -> Tensor:
    """Mean entropy (nats) of the distributions logits [B, T, V] over the tokens where mask [B, T] is 1. Tokens
    a distribution rules out (logit -inf: top-k, or words a head never writes) add 0, not 0 * -inf."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    per_token = -(p * logp.masked_fill(p == 0, 0.0)).sum(-1)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def adapt_entropy_coefficient(coefficient: float, current: float, target: float, step: float, limit: float) -> float:
    """ReasonGen-R1's adaptive entropy: the coefficient c of the term -c * H moves towards a bonus (c > 0) while
    the entropy is below its target and towards a penalty (c < 0) while above, by `step` per update, |c| <= limit
    (5e-3 in the paper; targets about 2.0 for text and 7.0 for image tokens on Janus-Pro-7B)."""
    moved = coefficient + step if current < target else coefficient - step
    return max(-limit, min(limit, moved))
