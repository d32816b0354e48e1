"""Train the world's image tokenizer (JanusVQVAE) on freshly rendered random scenes.

lr -> forward -> backward -> clip -> step -> log -> save, in one loop on accelerate. Every batch is
drawn from a generator seeded by (seed, step), so the data state is the step and a resumed
run sees exactly the batches it would have seen. A checkpoint's codebook is unit-norm (so
transformers' encode matches training); the raw rows training goes on from and the code-usage
counts of dead-code restarts are saved with the trainer state, so a resumed run continues
exactly as an uninterrupted one.
"""

from __future__ import annotations

import copy
import random

import numpy as np
import torch
import torch.nn.functional as F
from transformers import JanusVQVAE

from thinkdraw.checkpoint import load_model, load_trainer_state, read_meta, save_checkpoint
from thinkdraw.configs import TrainVQConfig
from thinkdraw.policy.vq import decode_tokens, encode_images, normalize_codebook, to_pixels, vq_forward, world_vq_config
from thinkdraw.trainers.common import RunLog, accelerated, cosine_lr, run_meta
from thinkdraw.world.detector import WorldDetector
from thinkdraw.world.layout import random_layout
from thinkdraw.world.render import render, render_image
from thinkdraw.world.spec import BACKGROUND


def scene_batch(seed: int, step: int, batch_size: int, max_objects: int) -> torch.Tensor:
    rng = random.Random(f"{seed}:{step}")
    scenes = [render(random_layout(rng, rng.randint(1, max_objects))) for _ in range(batch_size)]
    return to_pixels(np.stack(scenes))


def reconstruction_loss(reconstruction: torch.Tensor, pixels: torch.Tensor, object_weight: float) -> torch.Tensor:
    """MSE + L1, with pixels on and next to objects weighted `object_weight` times the open background:
    the detector reads shapes from their edges, which are a small share of a scene."""
    background = torch.tensor(BACKGROUND, dtype=pixels.dtype).view(1, 3, 1, 1) / 127.5 - 1.0
    on_object = (pixels - background).abs().amax(dim=1, keepdim=True).gt(0.01).float()  # [B, 1, H, W]
    near_object = F.max_pool2d(on_object, kernel_size=3, stride=1, padding=1)
    weight = 1.0 + (object_weight - 1.0) * near_object
    error = (reconstruction - pixels) ** 2 + (reconstruction - pixels).abs()
    return (weight * error).sum() / (weight.sum() * pixels.shape[1])


def train_vq(config: TrainVQConfig, echo=print) -> JanusVQVAE:
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    checkpoint = config.out / "checkpoint"
    if config.resume:
        vq, start = load_model(JanusVQVAE, checkpoint), read_meta(checkpoint)["step"]
    else:
        vq, start = JanusVQVAE(world_vq_config(config.codebook, config.grid)), 0
    vq.train()
    optimizer = torch.optim.Adam(vq.parameters(), lr=config.lr, betas=(0.9, 0.99))
    usage = torch.zeros(config.codebook)
    if config.resume:
        extra = load_trainer_state(checkpoint, optimizer)
        if "codebook" in extra:  # checkpoints from before these were saved resume from the unit-norm rows
            with torch.no_grad():
                vq.quantize.embedding.weight.copy_(extra["codebook"])
            usage = extra["usage"]
    accelerator, vq, optimizer = accelerated(vq, optimizer)
    log = RunLog(config.out, echo, config.max_minutes)

    def save(step: int) -> None:
        # normalise a copy: normalising the live codebook would change the run's course at every save
        saved = copy.deepcopy(vq)
        normalize_codebook(saved)
        extra = {"codebook": vq.quantize.embedding.weight, "usage": usage}
        save_checkpoint(checkpoint, saved, run_meta("vq", step, config), optimizer, extra=extra)

    step = start
    try:
        for step in range(start, config.steps):
            if log.out_of_time():
                echo(f"time budget reached at step {step}")
                break
            lr = cosine_lr(step, config.steps, config.warmup, config.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            pixels = scene_batch(config.seed, step, config.batch_size, config.max_objects).to(accelerator.device)
            out = vq_forward(vq, pixels)
            recon = reconstruction_loss(out.reconstruction, pixels, config.object_weight)
            loss = recon + config.beta * out.commitment + out.codebook
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(vq.parameters(), 1.0)
            optimizer.step()
            usage += torch.bincount(out.tokens.flatten().cpu(), minlength=config.codebook)
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
    normalize_codebook(vq)
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
