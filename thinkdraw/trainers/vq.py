"""Train the world's image tokenizer (JanusVQVAE) on freshly rendered random scenes.

lr -> forward -> backward -> clip -> step -> log -> save, in one loop. Every batch is
drawn from a generator seeded by (seed, step), so the data state is the step and a resumed
run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from transformers import JanusVQVAE

from thinkdraw.checkpoint import load_model, load_trainer_state, read_meta, save_checkpoint
from thinkdraw.configs import TrainVQConfig
from thinkdraw.policy.vq import decode_tokens, encode_images, normalize_codebook, to_pixels, vq_forward, world_vq_config
from thinkdraw.trainers.common import RunLog, cosine_lr, run_meta
from thinkdraw.world.detector import WorldDetector
from thinkdraw.world.layout import random_layout
from thinkdraw.world.render import render, render_image


def scene_batch(seed: int, step: int, batch_size: int, max_objects: int) -> torch.Tensor:
    rng = random.Random(f"{seed}:{step}")
    scenes = [render(random_layout(rng, rng.randint(1, max_objects))) for _ in range(batch_size)]
    return to_pixels(np.stack(scenes))


def train_vq(config: TrainVQConfig, echo=print) -> JanusVQVAE:
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    checkpoint = config.out / "checkpoint"
    if config.resume:
        vq, start = load_model(JanusVQVAE, checkpoint), read_meta(checkpoint)["step"]
    else:
        vq, start = JanusVQVAE(world_vq_config(config.codebook)), 0
    vq.train()
    optimizer = torch.optim.Adam(vq.parameters(), lr=config.lr, betas=(0.9, 0.99))
    if config.resume:
        load_trainer_state(checkpoint, optimizer)
    log = RunLog(config.out, echo, config.max_minutes)
    usage = torch.zeros(config.codebook)

    def save(step: int) -> None:
        normalize_codebook(vq)
        save_checkpoint(checkpoint, vq, run_meta("vq", step, config), optimizer)

    step = start
    try:
        for step in range(start, config.steps):
            if log.out_of_time():
                echo(f"time budget reached at step {step}")
                break
            lr = cosine_lr(step, config.steps, config.warmup, config.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            pixels = scene_batch(config.seed, step, config.batch_size, config.max_objects)
            out = vq_forward(vq, pixels)
            recon = F.mse_loss(out.reconstruction, pixels) + F.l1_loss(out.reconstruction, pixels)
            loss = recon + config.beta * out.commitment + out.codebook
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vq.parameters(), 1.0)
            optimizer.step()
            usage += torch.bincount(out.tokens.flatten(), minlength=config.codebook)
            if (step + 1) % config.restart_every == 0:
                _restart_dead_codes(vq, usage, pixels)
                usage.zero_()
            if step % 50 == 0 or step == config.steps - 1:
                codes = int(out.tokens.unique().numel())
                log.write({"step": step, "loss": loss.item(), "recon": recon.item(), "lr": lr, "codes_in_batch": codes})
            if (step + 1) % config.save_every == 0:
                save(step + 1)
        else:
            step = config.steps
    except KeyboardInterrupt:
        echo(f"interrupted at step {step}; saving")
        save(step)
        raise
    save(step)
    log.close()
    return vq


@torch.no_grad()
def _restart_dead_codes(vq: JanusVQVAE, usage: torch.Tensor, pixels: torch.Tensor) -> None:
    dead = (usage == 0).nonzero().flatten()
    if dead.numel() == 0:
        return
    latents = torch.nn.functional.normalize(vq.quant_conv(vq.encoder(pixels)), dim=1)  # [B, D, n, n]
    latents = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    pick = torch.randint(0, latents.shape[0], (dead.numel(),))
    vq.quantize.embedding.weight[dead] = latents[pick] + 0.01 * torch.randn_like(latents[pick])


@torch.no_grad()
def roundtrip_accuracy(vq: JanusVQVAE, scenes: int = 500, seed: int = 12345, batch: int = 50) -> dict:
    """Share of objects the exact detector still reads right (shape, colour, box within 1 px)
    after encode -> decode through transformers' own VQ methods."""
    vq.eval()
    detector = WorldDetector()
    rng = random.Random(seed)
    layouts = [random_layout(rng, rng.randint(1, 8)) for _ in range(scenes)]
    right = boxes = total = whole = 0
    for i in range(0, scenes, batch):
        chunk = layouts[i : i + batch]
        decoded = decode_tokens(vq, encode_images(vq, [render_image(s) for s in chunk]))
        for layout, image in zip(chunk, decoded, strict=True):
            found = [(d.label, d.color, d.box) for d in detector.detect(image) if d.score > 0.3]
            ok = 0
            for obj in layout:
                hit = [
                    f
                    for f in found
                    if f[:2] == (obj.shape, obj.color)
                    and max(abs(a - b) for a, b in zip(f[2], obj.box, strict=True)) <= 1
                ]
                if hit:
                    found.remove(hit[0])
                    ok += 1
                    boxes += hit[0][2] == obj.box
            right += ok
            total += len(layout)
            whole += ok == len(layout) and not found
    return {
        "objects_right": right / total,
        "boxes_exact": boxes / total,
        "scenes_right": whole / scenes,
        "objects": total,
    }
