"""Image degradations for measuring the detector's robustness (blur, noise, JPEG).

They stand in for what a VQ tokenizer round trip does to a render before a trained
tokenizer exists; benchmarks/detector_robustness.py reports accuracy under each.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter


def blur(image: Image.Image, sigma: float) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(sigma))


def noise(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    noisy = pixels + rng.normal(0.0, sigma, pixels.shape)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def degrade(image: Image.Image, name: str, rng: np.random.Generator) -> Image.Image:
    """Apply a named degradation ("blur:0.7", "noise:12", "jpeg:75", or "none")."""
    if name == "none":
        return image
    kind, _, value = name.partition(":")
    if kind == "blur":
        return blur(image, float(value))
    if kind == "noise":
        return noise(image, float(value), rng)
    if kind == "jpeg":
        return jpeg(image, int(value))
    raise ValueError(f"unknown degradation {name!r}")
