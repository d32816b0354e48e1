"""The image tokenizer: transformers' JanusVQVAE, for any Janus checkpoint (Janus-Pro's, the world's).

The image size is the VQ's own: `num_patches` tokens a side, each `2 ** (levels - 1)` pixels.

The world VQ (`thinkdraw.world.model`) encodes each patch on its own (`patch_local` in its config): a patch's token
depends on that patch's pixels only, so the same patch is always the same token, wherever
it is and whatever else the scene holds. Transformers' whole-image encoder (its receptive
field, attention and GroupNorm statistics span the scene) gave the open background of
world scenes many codes that changed with far-away objects (3.5 nats of code entropy at a
given position, 12 px from any object), noise a policy cannot learn to predict.

World patches are discrete (rendered shapes have hard edges: ~4200 distinct 4x4 patches),
and the patch-local encoder at its random initialisation already sends each of them in its
own direction, so training keeps the encoder fixed: the codebook is the encoder's output
for the most common distinct patches (`init_codebook`), and only the decoder learns
(`thinkdraw.world.train_vq`). Encoding is transformers' quantizer over these outputs;
decoding is transformers' `decode`, the same call training uses. VQs without the flag
(Janus-Pro's) encode the whole image, as transformers does.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import JanusVQVAE


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
    """Image tokens [B, n*n] -> images of the VQ's size, through transformers' own decode, one image at a time:
    a batched convolution rounds differently with the batch size (a pixel off by 1/255 now and then), and on
    a CPU one at a time is no slower."""
    pixels = torch.cat([vq.decode(row[None].to(vq.device)) for row in tokens])
    return to_images(pixels.float())


def image_size(vq: JanusVQVAE) -> int:
    """Pixels a side of the images this VQ encodes and decodes."""
    return vq.config.num_patches * 2 ** (len(vq.config.channel_multiplier) - 1)


def empty_token(vq: JanusVQVAE) -> int:
    """The code of an empty patch: the most common token of a plain mid-grey image (the world's background,
    and 0 in Janus's pixel normalisation). What a partial image shows where nothing is drawn yet."""
    size = image_size(vq)
    grey = Image.new("RGB", (size, size), (128, 128, 128))
    return int(encode_images(vq, [grey])[0].mode().values)
