"""What every training loop shares: the step loop, accelerate, the learning-rate schedule, the run log, metadata."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from thinkdraw.errors import ThinkdrawError


def cosine_lr(step: int, steps: int, warmup: int, peak: float, floor: float = 0.1) -> float:
    """Linear warm-up to `peak`, then cosine decay to `floor * peak` at `steps`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def accelerated(model, optimizer, runtime):
    """The model on the runtime's device (`thinkdraw.runtime`) and its optimizer handed to accelerate, with the
    backward / gradient clipping that go with it (the loops call accelerator.backward and
    accelerator.clip_grad_norm_ instead of torch's). Under `accelerate launch --num_processes P` (add --multi_gpu
    to start P processes on a CPU machine too) the model is not wrapped in DDP: run_steps splits each step's
    micro-batches among the processes and sums their gradients itself, so P processes take the very step one
    process would on the same global batch."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=runtime.device == "cpu")
    model = model.to(accelerator.device)
    optimizer = accelerator.prepare(optimizer)
    return accelerator, model, optimizer


def sum_across_processes(params, metrics: dict[str, float], accelerator) -> dict[str, float]:
    """Every process's gradients summed into each one's (a parameter this process left without one counts 0),
    and the metrics of all processes summed (a key only some processes report keeps their sum)."""
    import torch
    import torch.distributed as dist
    from accelerate.utils import gather_object

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for param, grad in zip(params, grads, strict=True):
        param.grad = flat[offset : offset + grad.numel()].view_as(grad).clone()
        offset += grad.numel()
    combined: dict[str, float] = {}
    for part in gather_object([metrics]):
        combine(combined, part)
    return combined


def combine(metrics: dict[str, float], part: dict[str, float]) -> None:
    """Add a micro-batch's (or a process's) metrics into the step's: summed, but a key ending in _max by max."""
    for key, value in part.items():
        if key not in metrics:
            metrics[key] = value
        else:
            metrics[key] = max(metrics[key], value) if key.endswith("_max") else metrics[key] + value


def format_metrics(record: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())


def run_meta(kind: str, step: int, config) -> dict:
    """What a checkpoint says about itself: kind, step, the run's config (JSON-safe)."""
    return {"kind": kind, "step": step, "run_config": json.loads(json.dumps(asdict(config), default=str))}


class StopSaved(ThinkdrawError):
    """A run that cannot go on though its weights are sound (no batch with any signal, say): run_steps saves the
    updates taken before the error stands, unlike a non-finite stop, which keeps the last checkpoint."""


class RunLog:
    """Metrics to OUT/log.jsonl (appended, so a resumed run continues it) and to the console; under several
    processes, by the main one only."""

    def __init__(self, out: Path, echo: Callable[[str], None], max_minutes: float = 0.0):
        from accelerate import PartialState

        self.main = PartialState().is_main_process
        out.mkdir(parents=True, exist_ok=True)
        self.file = (out / "log.jsonl").open("a") if self.main else None
        self.echo = echo if self.main else lambda _: None
        self.max_minutes = max_minutes
        self.began = time.monotonic()

    def minutes(self) -> float:
        return (time.monotonic() - self.began) / 60

    def out_of_time(self) -> bool:
        return bool(self.max_minutes) and self.minutes() > self.max_minutes

    def write(self, record: dict) -> None:
        record = {**record, "minutes": self.minutes()}
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        self.echo(format_metrics(record))

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def run_steps(start: int, config, optimizer, accelerator, params, loss_fn, save, log: RunLog, log_every: int) -> None:
    """The loop of every trainer, steps start .. config.steps - 1: lr (cosine_lr) -> for each of the
    config.accumulation micro-batches: loss_fn(step, micro) -> (loss, metrics) -> backward -> clip the summed
    gradient to config.clip (0: no clip) -> optimizer step -> log every `log_every` steps -> save(updates taken)
    every config.save_every updates and at the end. A micro-batch's loss is its share of the step's loss, so
    the accumulated gradient is the whole batch's; metrics are summed over micro-batches likewise (`combine`).

    Several processes (accelerate launch): process r takes micro-batches r, r + P, ... (config.accumulation must
    be a multiple of P), their gradients and metrics are summed across processes before the clip, and the main
    process alone saves and logs. It stops at the run's time budget (the main process's clock decides); Ctrl-C
    saves the updates taken so far and re-raises, so a resumed run neither repeats nor skips one; so does a
    StopSaved error."""
    import torch

    P, rank = accelerator.num_processes, accelerator.process_index
    if config.accumulation % P:
        raise ThinkdrawError(f"--accumulation {config.accumulation} must be a multiple of the {P} processes")
    done = start  # optimizer updates taken: what a checkpoint saved now holds

    def saved(updates: int) -> None:
        if accelerator.is_main_process:
            save(updates)
        accelerator.wait_for_everyone()

    def out_of_time() -> bool:
        flag = torch.tensor([float(log.out_of_time())])
        if P > 1:
            torch.distributed.broadcast(flag, src=0)  # the main process's clock decides
        return bool(flag.item())

    try:
        for step in range(start, config.steps):
            if out_of_time():
                log.echo(f"time budget reached at step {step}")
                break
            lr = cosine_lr(step, config.steps, config.warmup, config.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            metrics: dict[str, float] = {}
            for micro in range(rank, config.accumulation, P):
                loss, parts = loss_fn(step, micro)
                accelerator.backward(loss)
                combine(metrics, parts)
            if P > 1:
                metrics = sum_across_processes(params, metrics, accelerator)
            norm = accelerator.clip_grad_norm_(params, config.clip if config.clip > 0 else float("inf"))
            metrics["grad_norm"] = norm.item()
            optimizer.step()
            done = step + 1
            if step % log_every == 0 or step == config.steps - 1:
                log.write({"step": step, "lr": lr, **metrics})
            if done % config.save_every == 0:
                saved(done)
    except KeyboardInterrupt:
        log.echo(f"interrupted after step {done}; saving")
        if accelerator.is_main_process:
            save(done)
        raise
    except StopSaved as stop:
        if done == start:
            raise
        saved(done)
        raise StopSaved(f"{stop} (the {done} updates taken are saved)") from None
    saved(done)
    log.close()
