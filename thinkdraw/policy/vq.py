"""The image tokenizer: transformers' JanusVQVAE, sized for the shapes world.

The world VQ encodes each patch on its own (`patch_local` in its config): a patch's token
depends on that patch's pixels only, so the same patch is always the same token, wherever
it is and whatever else the scene holds. Transformers' whole-image encoder (its receptive
field, attention and GroupNorm statistics span the scene) gave the open background of
world scenes many codes that changed with far-away objects (3.5 nats of code entropy at a
given position, 12 px from any object), noise a policy cannot learn to predict.

World patches are discrete (rendered shapes have hard edges: ~4200 distinct 4x4 patches),
and the patch-local encoder at its random initialisation already sends each of them in its
own direction, so training keeps the encoder fixed: the codebook is the encoder's output
for the most common distinct patches (`init_codebook`), and only the decoder learns
(`thinkdraw.trainers.vq`). Encoding is transformers' quantizer over these outputs;
decoding is transformers' `decode`, the same call training uses. VQs without the flag
(Janus-Pro's) encode the whole image, as transformers does.
"""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import JanusVQVAE, JanusVQVAEConfig

from thinkdraw.world.layout import random_layout
from thinkdraw.world.render import render
from thinkdraw.world.spec import CANVAS


def world_vq_config(codebook: int = 4096, grid: int = 16) -> JanusVQVAEConfig:
    """A small patch-local VQ for 64x64 world images: `grid` x `grid` tokens, one per (64 / grid)-pixel patch.

    16 (4x4 patches) is the world default: with 8x8 patches, 1024 codes cannot hold the corners of
    12-pixel shapes, and the exact detector misreads a third of the objects after a round trip. Rendered
    scenes hold about 4200 distinct 4x4 patches (the most common 4096 cover 99.98% of patches), hence 4096
    codes. At its random initialisation this encoder gives the 4223 distinct patches of 3000 scenes 4223
    distinct unit outputs (the closest pair at cosine 0.99998)."""
    levels = {8: 4, 16: 3}[grid]  # downsampling is 2 ** (levels - 1)
    return JanusVQVAEConfig(
        embed_dim=16,
        num_embeddings=codebook,
        latent_channels=64,
        base_channels=32,  # the minimum: every norm is GroupNorm(32)
        channel_multiplier=[1, 2, 2, 2][:levels],
        num_res_blocks=1,
        num_patches=grid,
        projection_dim=128,  # overwritten by the policy config to the LM width
        image_token_embed_dim=128,
        patch_local=True,
    )


def patchify(pixels: torch.Tensor, n: int) -> torch.Tensor:
    """[B, C, H, W] -> the n x n patches of each image in raster order, [B * n * n, C, H / n, W / n]."""
    B, C, H, _ = pixels.shape
    p = H // n
    patches = pixels.unfold(2, p, p).unfold(3, p, p)  # [B, C, n, n, p, p]
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(B * n * n, C, p, p)


def latents(vq: JanusVQVAE, pixels: torch.Tensor) -> torch.Tensor:
    """Encoder outputs [B, D, n, n] before quantisation; each patch encoded alone when the VQ is patch-local."""
    if not getattr(vq.config, "patch_local", False):
        return vq.quant_conv(vq.encoder(pixels))
    n = vq.config.num_patches
    return patch_latents(vq, patchify(pixels, n)).view(pixels.shape[0], n, n, -1).permute(0, 3, 1, 2)


def patch_latents(vq: JanusVQVAE, patches: torch.Tensor) -> torch.Tensor:
    """A patch-local VQ's encoder outputs for single patches [P, 3, p, p] -> [P, D]."""
    return vq.quant_conv(vq.encoder(patches)).flatten(1)


@torch.no_grad()
def init_codebook(vq: JanusVQVAE, scenes: int = 3000, seed: int = 0) -> dict:
    """Set the codebook to the unit-norm encoder outputs of the most common distinct patches of `scenes`
    random world scenes (1 to 8 objects); unit rows make transformers' raw-distance lookup the cosine one.
    Codes beyond the distinct patches get random unit rows. Returns {"patches", "covered"}: how many
    distinct patches were seen and the share of patch occurrences whose patch has its own code."""
    rng = random.Random(seed)
    images = np.stack([render(random_layout(rng, rng.randint(1, 8))) for _ in range(scenes)])
    patches = patchify(to_pixels(images), vq.config.num_patches)  # [S*n*n, 3, p, p]
    counts = Counter(map(bytes, patches.flatten(1).numpy()))
    K = vq.config.num_embeddings
    common = [key for key, _ in counts.most_common(K)]
    chosen = torch.from_numpy(np.frombuffer(b"".join(common), dtype=np.float32).copy())
    was_training = vq.training
    vq.eval()
    rows = F.normalize(torch.randn(K, vq.config.embed_dim, generator=torch.Generator().manual_seed(seed)), dim=1)
    rows[: len(common)] = F.normalize(patch_latents(vq, chosen.view(len(common), *patches.shape[1:])), dim=1)
    vq.quantize.embedding.weight.copy_(rows)
    vq.train(was_training)
    covered = sum(counts[key] for key in common) / patches.shape[0]
    return {"patches": len(counts), "covered": covered}


def to_pixels(images: list[Image.Image] | np.ndarray) -> torch.Tensor:
    """uint8 images -> float [B, 3, H, W] in [-1, 1] (Janus's normalisation: mean = std = 0.5)."""
    array = np.stack([np.asarray(i.convert("RGB")) for i in images]) if isinstance(images, list) else images
    return torch.from_numpy(array).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_images(pixels: torch.Tensor) -> list[Image.Image]:
    """float [B, 3, H, W] in [-1, 1] -> uint8 PIL images."""
    array = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in array]


@torch.no_grad()
def encode_pixels(vq: JanusVQVAE, pixels: torch.Tensor) -> torch.Tensor:
    """Pixels [B, 3, H, W] in [-1, 1] -> image tokens [B, n*n], through transformers' quantizer (its
    `encode`, patch by patch when the VQ is patch-local)."""
    return vq.quantize(latents(vq, pixels.to(vq.device, vq.dtype)))[2].view(pixels.shape[0], -1)


def encode_images(vq: JanusVQVAE, images: list[Image.Image]) -> torch.Tensor:
    """Images -> image tokens [B, n*n]."""
    return encode_pixels(vq, to_pixels(images))


@torch.no_grad()
def decode_tokens(vq: JanusVQVAE, tokens: torch.Tensor) -> list[Image.Image]:
    """Image tokens [B, n*n] -> CANVAS x CANVAS images, through transformers' own decode, one image at a time:
    a batched convolution rounds differently with the batch size (a pixel off by 1/255 now and then), and on
    a CPU one at a time is no slower."""
    pixels = torch.cat([vq.decode(row[None]) for row in tokens])
    assert pixels.shape[-1] == CANVAS, f"VQ decodes {pixels.shape[-1]} px, the world is {CANVAS}"
    return to_images(pixels.float())
