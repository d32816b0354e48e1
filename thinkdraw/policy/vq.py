"""The image tokenizer: transformers' JanusVQVAE, sized for the shapes world.

Janus's VQ looks codes up L2-normalised when decoding but compares raw vectors when
encoding. We train with normalised codes on both sides (as LlamaGen does) and keep the
codebook rows unit-norm, which makes the two agree: for unit codes, the nearest raw code
is the nearest normalised one. So after training, transformers' own `encode` / `decode`
are an exact round trip of what we trained.

JanusVQVAE.forward decodes from discrete ids and passes no gradient to the encoder, so
training uses `vq_forward` below (straight-through estimator).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import JanusVQVAE, JanusVQVAEConfig

from thinkdraw.world.spec import CANVAS


def world_vq_config(codebook: int = 1024, grid: int = 16) -> JanusVQVAEConfig:
    """A small VQ for 64x64 world images: `grid` x `grid` tokens, one per (64 / grid)-pixel square patch.

    16 (4x4 patches) is the world default: with 8x8 patches, 1024 codes cannot hold the corners of
    12-pixel shapes, and the exact detector misreads a third of the objects after a round trip."""
    levels = {8: 4, 16: 3}[grid]  # downsampling is 2 ** (levels - 1)
    return JanusVQVAEConfig(
        embed_dim=8,
        num_embeddings=codebook,
        latent_channels=64,
        base_channels=32,  # the minimum: every norm is GroupNorm(32)
        channel_multiplier=[1, 2, 2, 2][:levels],
        num_res_blocks=1,
        num_patches=grid,
        projection_dim=128,  # overwritten by the policy config to the LM width
        image_token_embed_dim=128,
    )


@dataclass
class VQOutput:
    reconstruction: torch.Tensor  # [B, 3, H, W] in [-1, 1]
    tokens: torch.Tensor  # [B, n*n]
    commitment: torch.Tensor  # scalar: encoder output pulled toward its code
    codebook: torch.Tensor  # scalar: codes pulled toward encoder outputs


def vq_forward(vq: JanusVQVAE, pixels: torch.Tensor) -> VQOutput:
    """Encode, quantise with unit-norm codes (straight-through), decode. pixels: [B, 3, H, W] in [-1, 1]."""
    z = F.normalize(vq.quant_conv(vq.encoder(pixels)), dim=1)  # [B, D, n, n]
    B, D, n, _ = z.shape
    flat = z.permute(0, 2, 3, 1).reshape(-1, D)  # [B*n*n, D]
    codes = F.normalize(vq.quantize.embedding.weight, dim=1)  # [K, D]
    tokens = (flat @ codes.T).argmax(dim=1)  # nearest unit code = largest cosine
    quant = codes[tokens]  # [B*n*n, D]
    commitment = F.mse_loss(flat, quant.detach())
    codebook = F.mse_loss(quant, flat.detach())
    quant = flat + (quant - flat).detach()  # straight-through
    quant = quant.view(B, n, n, D).permute(0, 3, 1, 2)  # [B, D, n, n]
    reconstruction = vq.decoder(vq.post_quant_conv(quant))
    return VQOutput(reconstruction, tokens.view(B, n * n), commitment, codebook)


@torch.no_grad()
def normalize_codebook(vq: JanusVQVAE) -> None:
    """Make the codebook rows unit-norm so transformers' raw-distance encode matches training."""
    weight = vq.quantize.embedding.weight
    weight.copy_(F.normalize(weight, dim=1))


def to_pixels(images: list[Image.Image] | np.ndarray) -> torch.Tensor:
    """uint8 images -> float [B, 3, H, W] in [-1, 1] (Janus's normalisation: mean = std = 0.5)."""
    array = np.stack([np.asarray(i.convert("RGB")) for i in images]) if isinstance(images, list) else images
    return torch.from_numpy(array).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_images(pixels: torch.Tensor) -> list[Image.Image]:
    """float [B, 3, H, W] in [-1, 1] -> uint8 PIL images."""
    array = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in array]


@torch.no_grad()
def encode_images(vq: JanusVQVAE, images: list[Image.Image]) -> torch.Tensor:
    """Images -> image tokens [B, n*n], through transformers' own encode."""
    pixels = to_pixels(images).to(vq.device, vq.dtype)
    return vq.encode(pixels).image_tokens.view(len(images), -1)


@torch.no_grad()
def decode_tokens(vq: JanusVQVAE, tokens: torch.Tensor) -> list[Image.Image]:
    """Image tokens [B, n*n] -> CANVAS x CANVAS images, through transformers' own decode."""
    pixels = vq.decode(tokens)
    assert pixels.shape[-1] == CANVAS, f"VQ decodes {pixels.shape[-1]} px, the world is {CANVAS}"
    return to_images(pixels.float())
