"""Supervised training of a chat judge (thinkdraw.judges.vlm.VLMChat) on (turn, answer) pairs: the answer
tokens' cross-entropy, as the judge will be asked (the same chat template, the same question texts).

lr -> forward -> backward -> clip -> step -> log -> save: the trainers' shared loop (`run_steps`). Each step
draws its batch from a generator seeded by (seed, step), so a resumed run sees the batches it would have.
Every example weighs the same, whatever its answer's length (losses.answer_cross_entropy).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from thinkdraw.checkpoint import load_trainer_state, read_meta, save_checkpoint
from thinkdraw.judges.chat import Turn
from thinkdraw.judges.vlm import VLMChat
from thinkdraw.runtime import Runtime
from thinkdraw.trainers.common import RunLog, accelerated, run_meta, run_steps
from thinkdraw.trainers.losses import answer_cross_entropy, micro_batches


def train_judge(
    chat: VLMChat | None, examples: Sequence[tuple[Turn, str]], config, meta: dict | None = None, echo=print
) -> VLMChat:
    """Train `chat` (or, with config.resume, the judge in config.out/checkpoint) on the examples."""
    if not examples:
        raise ValueError("no examples to train the judge on")
    runtime = Runtime.create(config.device, "float32", config.threads)
    torch.manual_seed(config.seed)
    checkpoint = config.out / "checkpoint"
    first = 0
    if config.resume:
        chat, first = VLMChat.load(str(checkpoint), device=str(runtime.device)), read_meta(checkpoint)["step"]
    chat.model.to(runtime.device).train()
    params = [p for p in chat.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=(0.9, 0.95), weight_decay=0.01)
    if config.resume:
        load_trainer_state(checkpoint, optimizer)
    accelerator, model, optimizer = accelerated(chat.model, optimizer, runtime)
    log = RunLog(config.out, echo, config.max_minutes)
    slices = micro_batches(config.batch_size, config.accumulation)

    def save(step: int) -> None:
        info = {**run_meta("judge", step, config), **(meta or {})}
        save_checkpoint(checkpoint, accelerator.unwrap_model(model), info, optimizer, tokenizer=chat.processor)

    def loss_fn(step: int, micro: int) -> tuple[torch.Tensor, dict]:
        rng = random.Random(f"{config.seed}:{step}")
        rows = [examples[rng.randrange(len(examples))] for _ in range(config.batch_size)][slices[micro]]
        batch = chat.training_batch([turn for turn, _ in rows], [answer for _, answer in rows])
        labels = batch.pop("labels")
        out = answer_cross_entropy(model(**batch).logits, labels, rows=config.batch_size)
        return out.loss, out.metrics

    run_steps(first, config, optimizer, accelerator, params, loss_fn, save, log, log_every=50)
    chat.model.eval()
    return chat
