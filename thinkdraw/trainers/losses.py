"""Training losses: small standalone functions that take logits, targets and weights, and return the loss and
detached metrics. Each says which paper it follows and where we depart from it.

Gradient accumulation: a step's batch may be split into micro-batches. A loss given `totals` (the token
counts of the whole step's batch) divides by them instead of its own, so the micro-batches' losses and
metrics add up to exactly those of the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def micro_batches(size: int, accumulation: int) -> list[slice]:
    """The row slices of `accumulation` equal micro-batches of a batch of `size` rows."""
    if accumulation < 1 or size % accumulation:
        raise ValueError(f"a batch of {size} does not split into {accumulation} equal micro-batches")
    step = size // accumulation
    return [slice(i, i + step) for i in range(0, size, step)]
