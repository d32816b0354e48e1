"""DPO and iterative DPO on a policy's plan and image tokens ("verify and reinforce image generation step by step":
pairs of the policy's own samples ranked by a reward model, beta 0.1, log-probs summed over image tokens;
iterative DPO samples new pairs with the trained policy and trains again), over any list of GenEval-style
records and any reward (`thinkdraw.rewards`).

Round r of config.rounds, made at update r * steps_per_round:

    prompts_per_round records and a seed, from a generator seeded by (seed, r) alone
    -> `candidates` samples of each from the policy as it stands (Policy.generate, sample_batch rows at a time;
       a prompt's samples do not depend on that batching) -> scored by the reward
    -> one pair per prompt: its best sample chosen, its worst rejected, when their scores differ (a prompt
       whose scores tie, or with fewer than two scores, gives none; a None score is left out)
    -> the reference's log-probs of both, teacher-forced: the policy as the round begins, which drew them, so
       the round's first update has margins of exactly 0 and a loss of log 2

then steps_per_round updates, each on batch_size pairs drawn by a generator seeded by (seed, update):

    summed log-probs of chosen and rejected (image tokens; plan tokens too with plan_tokens) -> dpo_loss ->
    backward -> clip -> step -> log -> save

through the trainers' shared loop (`run_steps`). The log-probs are those of the distribution sampled (the same
temperature and guidance, as GRPO's ratio: thinkdraw.trainers.rollouts.token_logprobs).

Exact resume: while a round lasts, its pairs (tokens, sampler and reference log-probs) go into each checkpoint,
so a resumed run trains on the very same pairs; a checkpoint at a round's end carries none, and the next
round is sampled from the saved weights, as it would have been. Each round's final weights are also kept
in OUT/rounds/R (no optimizer state) for evaluation: round 1 is plain DPO.

LoRA, the model kept in eval mode, and the non-finite checks are GRPO's (`thinkdraw.trainers.rollouts`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from thinkdraw.checkpoint import load_trainer_state, save_checkpoint
from thinkdraw.configs import TrainDPOConfig
from thinkdraw.policy.model import Candidate, Policy
from thinkdraw.rewards import Reward
from thinkdraw.runtime import Runtime
from thinkdraw.trainers.common import RunLog, accelerated, run_meta, run_steps
from thinkdraw.trainers.losses import dpo_loss
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

# -- pairs ------------------------------------------------------------------------------------------------------


def round_records(records: Sequence[dict], config: TrainDPOConfig, round: int) -> tuple[list[dict], int]:
    """Round `round`'s records (distinct) and its sampling seed, from a generator seeded by (seed, round) alone."""
    rng = random.Random(f"{config.seed}:round:{round}")
    return rng.sample(list(records), config.prompts_per_round), rng.randrange(2**31)


def pick_pair(values: Sequence[float | None]) -> tuple[int, int] | None:
    """(chosen, rejected): the first best and the first worst of a prompt's scores; None when they tie or fewer
    than two are known."""
    known = [(v, i) for i, v in enumerate(values) if v is not None]
    if len(known) < 2:
        return None
    best = max(known, key=lambda vi: (vi[0], -vi[1]))
    worst = min(known, key=lambda vi: (vi[0], vi[1]))
    return None if best[0] == worst[0] else (best[1], worst[1])


def make_pairs(policy: Policy, records: Sequence[dict], reward: Reward, config: TrainDPOConfig, round: int, step: int):
    """Round `round`'s pairs as Rollouts: the chosen samples' rows, then their rejected ones' in the same order
    (advantages +1 and -1), with the reference's log-probs; and the round's ranking statistics."""
    chosen_records, seed = round_records(records, config, round)
    K = config.candidates
    per_chunk = max(1, config.sample_batch // K)
    candidates: list[Candidate] = []
    values: list[float | None] = []
    for start in range(0, len(chosen_records), per_chunk):
        chunk = chosen_records[start : start + per_chunk]
        indices = list(range(start, start + len(chunk)))
        drawn, scores = sample_scored(policy, chunk, reward, config, K, seed, step, f"round {round}", indices)
        candidates += drawn
        values += scores
    pairs = [pick_pair(values[k * K : (k + 1) * K]) for k in range(len(chosen_records))]
    winners = [k * K + p[0] for k, p in enumerate(pairs) if p is not None]
    losers = [k * K + p[1] for k, p in enumerate(pairs) if p is not None]
    known = [v for v in values if v is not None]
    stats = {
        "pairs": float(len(winners)),
        "rank_mean": sum(known) / len(known) if known else float("nan"),
        "rank_none": 1 - len(known) / len(values),
        "chosen_mean": sum(values[i] for i in winners) / max(1, len(winners)),
        "rejected_mean": sum(values[i] for i in losers) / max(1, len(losers)),
    }
    rows = [candidates[i] for i in winners + losers]
    batch = rollouts_of(rows, [1.0] * len(winners) + [-1.0] * len(losers), round, stats, policy.device)
    if not config.plan_tokens:
        batch.mask[:, : batch.width] = 0
    if rows:
        with torch.no_grad():
            parts = [
                token_logprobs(policy, batch.rows(list(range(i, min(i + config.sample_batch, len(rows))))), config)
                for i in range(0, len(rows), config.sample_batch)
            ]
        batch.ref_logps = torch.cat([p.logps for p in parts])
    return batch


def sequence_logps(logps: Tensor, mask: Tensor) -> Tensor:
    """Per-row sums of the counted tokens' log-probs [K, W + N] -> [K]."""
    return (logps * mask).sum(1)


# -- the run ----------------------------------------------------------------------------------------------------


def train_dpo(
    config: TrainDPOConfig,
    records: Sequence[dict],
    reward: Reward,
    echo: Callable[[str], None] = print,
    meta: dict | None = None,
    held_out: HeldOut | None = None,
) -> Policy:
    """DPO from config.init (or, with config.resume, from config.out/checkpoint) on prompts drawn from `records`
    (GenEval-style dicts, "prompt" at least: what the reward reads as Sample.metadata). `meta` goes into every
    checkpoint's thinkdraw.json (the environment, say); `held_out`: prompts scored every so many updates."""
    if len(records) < config.prompts_per_round:
        raise RunError(f"{len(records)} records: fewer than --prompts-per-round {config.prompts_per_round}")
    runtime = Runtime.create(config.device, "float32", config.threads)
    torch.manual_seed(config.seed)
    checkpoint = config.out / "checkpoint"
    saved = saved_run(config, checkpoint, "policy-dpo")
    policy, params = trainable_policy(config, checkpoint, bool(saved), runtime)
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=(0.9, 0.95), weight_decay=0.0)
    first, current = 0, None  # current: the pairs of the round being trained on
    if saved:
        extra = load_trainer_state(checkpoint, optimizer)
        if config.lora_rank:
            restore_adapters(policy.model, extra)
        first = saved["step"]
        if saved["dpo"]["pairs"] is not None:
            current = rollouts_from_state(saved["dpo"]["pairs"], extra, runtime.device)
    accelerator, policy.model, optimizer = accelerated(policy.model, optimizer, runtime)
    log = RunLog(config.out, echo, config.max_minutes)
    S = config.steps_per_round

    def pairs_for(step: int) -> Rollouts:
        nonlocal current
        if current is None or current.index != step // S:
            current = make_pairs(policy, records, reward, config, step // S, step)
            log.write({"step": step, "round": step // S, "sampled": 1, **current.stats})
        if not current.prompts:
            raise RunError(
                f"round {step // S}: no pair (every prompt's samples scored alike): the reward cannot rank this "
                "policy's samples; try more --candidates or --prompts-per-round"
            )
        return current

    def loss_fn(step: int, micro: int) -> tuple[Tensor, dict]:
        pairs = pairs_for(step)
        P = len(pairs.prompts) // 2
        rng = random.Random(f"{config.seed}:{step}")
        picked = rng.sample(range(P), min(config.batch_size, P))
        part = picked[row_slices(len(picked), config.accumulation)[micro]]
        if not part:  # fewer pairs than micro-batches
            return torch.zeros((), requires_grad=True), {}
        rows = pairs.rows(part + [i + P for i in part])
        with loss_forward(policy, config):
            now = sequence_logps(token_logprobs(policy, rows, config).logps, rows.mask)
        ref = sequence_logps(rows.ref_logps, rows.mask)
        n = len(part)
        out = dpo_loss(now[:n], now[n:], ref[:n], ref[n:], config.beta)
        check_finite(out.loss, "the DPO loss", step)
        share = n / len(picked)
        metrics = {key: value * share for key, value in out.metrics.items()}
        metrics["margin"] = metrics["reward_chosen"] - metrics["reward_rejected"]
        if micro == 0:
            metrics.update(pairs.stats, round=float(pairs.index))
            metrics.update(held_out_metrics(policy, held_out, config, step))
        return out.loss * share, metrics

    def save(done: int) -> None:
        for param in params:
            if not torch.isfinite(param).all():
                raise RunError(f"the weights are non-finite after update {done}: not saved, the last checkpoint stays")
        in_round = current is not None and done % S and current.index == done // S
        info, tensors = rollouts_state(current) if in_round else (None, {})
        model = model_to_save(policy.model, config.lora_rank, tensors)
        run = {**run_meta("policy-dpo", done, config), **(meta or {})}
        save_checkpoint(checkpoint, model, {**run, "dpo": {"pairs": info}}, optimizer, policy.tokenizer, tensors)
        if done % S == 0 and done:
            save_checkpoint(config.out / "rounds" / str(done // S), model, run, tokenizer=policy.tokenizer)

    try:
        run_steps(first, config, optimizer, accelerator, params, loss_fn, save, log, log_every=1)
    finally:
        log.close()
    return policy
