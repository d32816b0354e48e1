"""Train the world's image tokenizer (JanusVQVAE) on freshly rendered random scenes.

lr -> forward -> backward -> clip -> step -> log -> save, in one loop on accelerate. Every batch is
drawn from a generator seeded by (seed, step), so the data state is the step: a resumed run
sees the batches it would have seen and ends exactly where an uninterrupted one does.

The encoder (patch-local) and the codebook (its outputs for the most common distinct
patches, `init_codebook`) are fixed from the start, so tokens are the same from the first
step to the last; only the decoder learns, through transformers' own `decode`. Why the
encoder stays fixed: trained jointly with the codebook, the patch-local encoder collapsed
within ten steps (every patch on one code, with or without a commitment loss), while at
its random initialisation it already gives every distinct world patch its own output.
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from transformers import JanusVQVAE

from thinkdraw.checkpoint import load_model, load_trainer_state, read_meta, save_checkpoint
from thinkdraw.configs import TrainVQConfig
from thinkdraw.policy.vq import decode_tokens, encode_images, encode_pixels, to_pixels
from thinkdraw.runtime import Runtime
from thinkdraw.trainers.common import RunLog, accelerated, run_meta, run_steps
from thinkdraw.trainers.losses import micro_batches
from thinkdraw.world.detector import WorldDetector
from thinkdraw.world.layout import random_layout
from thinkdraw.world.model import init_codebook, world_vq_config
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


def decoder_parameters(vq: JanusVQVAE) -> list[torch.nn.Parameter]:
    """What training moves: the decoder side. The patch-local encoder and the codebook stay fixed."""
    params = []
    for name, param in vq.named_parameters():
        param.requires_grad_(name.startswith(("decoder.", "post_quant_conv.")))
        if param.requires_grad:
            params.append(param)
    return params


def train_vq(config: TrainVQConfig, echo=print) -> JanusVQVAE:
    runtime = Runtime.create(config.device, "float32", config.threads)
    torch.manual_seed(config.seed)
    checkpoint = config.out / "checkpoint"
    if config.resume:
        vq, start = load_model(JanusVQVAE, checkpoint), read_meta(checkpoint)["step"]
    else:
        vq, start = JanusVQVAE(world_vq_config(config.codebook, config.grid)), 0
        coverage = init_codebook(vq, config.codebook_scenes, config.seed)
        share = coverage["covered"]
        echo(f"codebook: {coverage['patches']} distinct patches; {share:.4%} of patches have a code of their own")
    vq.train()
    params = decoder_parameters(vq)
    optimizer = torch.optim.Adam(params, lr=config.lr, betas=(0.9, 0.99))
    if config.resume:
        load_trainer_state(checkpoint, optimizer)
    accelerator, vq, optimizer = accelerated(vq, optimizer, runtime)
    log = RunLog(config.out, echo, config.max_minutes)

    def save(step: int) -> None:
        save_checkpoint(checkpoint, vq, run_meta("vq", step, config), optimizer)

    def loss_fn(step: int, micro: int) -> tuple[torch.Tensor, dict]:
        """The mean of the micro-batches' losses (each normalised by its own pixel weights)."""
        pixels = scene_batch(config.seed, step, config.batch_size, config.max_objects).to(accelerator.device)
        pixels = pixels[micro_batches(config.batch_size, config.accumulation)[micro]]
        tokens = encode_pixels(vq, pixels)
        with torch.autocast(pixels.device.type, dtype=torch.bfloat16, enabled=config.bf16):
            reconstruction = vq.decode(tokens).float()
        loss = reconstruction_loss(reconstruction, pixels, config.object_weight) / config.accumulation
        return loss, {"loss": loss.item()}

    run_steps(start, config, optimizer, accelerator, params, loss_fn, save, log, log_every=50)
    vq.eval()
    return vq


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
