"""What every training loop shares: the step loop, accelerate, the learning-rate schedule, the run log, metadata."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path


def cosine_lr(step: int, steps: int, warmup: int, peak: float, floor: float = 0.1) -> float:
    """Linear warm-up to `peak`, then cosine decay to `floor * peak` at `steps`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def accelerated(model, optimizer, runtime):
    """Hand a model and its optimizer to accelerate on the runtime's device (`thinkdraw.runtime`), with the
    backward / gradient clipping that go with it. One process; the loops call accelerator.backward and
    accelerator.clip_grad_norm_ instead of torch's."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=runtime.device == "cpu")
    model, optimizer = accelerator.prepare(model, optimizer)
    return accelerator, model, optimizer


def format_metrics(record: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())


def run_meta(kind: str, step: int, config) -> dict:
    """What a checkpoint says about itself: kind, step, the run's config (JSON-safe)."""
    return {"kind": kind, "step": step, "run_config": json.loads(json.dumps(asdict(config), default=str))}


class RunLog:
    """Metrics to OUT/log.jsonl (appended, so a resumed run continues it) and to the console."""

    def __init__(self, out: Path, echo: Callable[[str], None], max_minutes: float = 0.0):
        out.mkdir(parents=True, exist_ok=True)
        self.file = (out / "log.jsonl").open("a")
        self.echo = echo
        self.max_minutes = max_minutes
        self.began = time.monotonic()

    def minutes(self) -> float:
        return (time.monotonic() - self.began) / 60

    def out_of_time(self) -> bool:
        return bool(self.max_minutes) and self.minutes() > self.max_minutes

    def write(self, record: dict) -> None:
        record = {**record, "minutes": self.minutes()}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        self.echo(format_metrics(record))

    def close(self) -> None:
        self.file.close()


def run_steps(start: int, config, optimizer, accelerator, params, loss_fn, save, log: RunLog, log_every: int) -> None:
    """The loop of every trainer, steps start .. config.steps - 1: lr (cosine_lr) -> for each of the
    config.accumulation micro-batches: loss_fn(step, micro) -> (loss, metrics) -> backward -> clip the summed
    gradient to config.clip (0: no clip) -> optimizer step -> log every `log_every` steps -> save(updates taken)
    every config.save_every updates and at the end. A micro-batch's loss is its share of the step's loss, so
    the accumulated gradient is the whole batch's; metrics are summed over micro-batches likewise.

    It stops at the run's time budget; Ctrl-C saves the updates taken so far and re-raises, so a resumed run
    neither repeats nor skips one."""
    done = start  # optimizer updates taken: what a checkpoint saved now holds
    try:
        for step in range(start, config.steps):
            if log.out_of_time():
                log.echo(f"time budget reached at step {step}")
                break
            lr = cosine_lr(step, config.steps, config.warmup, config.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            metrics: dict[str, float] = {}
            for micro in range(config.accumulation):
                loss, parts = loss_fn(step, micro)
                accelerator.backward(loss)
                for key, value in parts.items():
                    metrics[key] = metrics.get(key, 0.0) + value
            norm = accelerator.clip_grad_norm_(params, config.clip if config.clip > 0 else float("inf"))
            metrics["grad_norm"] = norm.item()
            optimizer.step()
            done = step + 1
            if step % log_every == 0 or step == config.steps - 1:
                log.write({"step": step, "lr": lr, **metrics})
            if done % config.save_every == 0:
                save(done)
    except KeyboardInterrupt:
        log.echo(f"interrupted after step {done}; saving")
        save(done)
        raise
    save(done)
    log.close()
