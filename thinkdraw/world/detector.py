"""The exact detector for shapes-world images: the evaluator's oracle.

It reads the spec, not a learned model: every pixel is explained as a blend of the grey
background and one palette colour, pixels that are mostly one colour form objects, and
each object is fitted by the rendered mask of every shape, size and position near it.
The fitted box is the object's layout box, so a clean render is read back exactly.

Blends make it robust to what a VQ tokenizer round trip does to an image (soft edges,
colour noise, block artefacts): a blurred edge pixel still counts for its colour, in
proportion to how much of that colour it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

from thinkdraw.errors import ImageError
from thinkdraw.evaluator.detection import Detection
from thinkdraw.world.render import shape_mask
from thinkdraw.world.spec import BACKGROUND, CANVAS, COLORS, MAX_SIZE, MIN_SIZE, SHAPES

_NAMES = tuple(COLORS)
_DIRECTIONS = np.array([COLORS[c] for c in _NAMES], dtype=np.float32) - np.float32(BACKGROUND)
_SQ_NORMS = (_DIRECTIONS**2).sum(axis=1)  # [K]
_SIZES = np.arange(MIN_SIZE, MAX_SIZE + 1)
# Area of every shape at every size, for a first guess of the size from an object's mass.
_AREAS = {shape: np.array([shape_mask(shape, s).sum() for s in _SIZES]) for shape in SHAPES}
# Centre of mass of each shape's mask relative to its box, as a fraction of the size.
_CENTROIDS = {
    shape: np.mean([(np.argwhere(shape_mask(shape, s)).mean(axis=0)[::-1] + 0.5) / s for s in _SIZES], axis=0)  # (x, y)
    for shape in SHAPES
}


@dataclass(frozen=True)
class DetectorSettings:
    residual: float = 48.0  # a pixel further than this from every grey-to-colour blend is noise
    core: float = 0.5  # a pixel belongs to an object's core when at least this much of its colour
    min_pixels: int = 12  # smaller cores are specks, not objects
    search: int = 1  # fit sizes and positions within this many pixels of the first guess


def as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """The image as float32 [CANVAS, CANVAS, 3]; an integer multiple of the canvas is box-downsampled."""
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            image = image.convert("RGB")
        w, h = image.size
        if (w, h) != (CANVAS, CANVAS):
            if w != h or w % CANVAS:
                raise ImageError(f"expected a {CANVAS}x{CANVAS} shapes-world image, got {w}x{h}")
            image = image.resize((CANVAS, CANVAS), Image.Resampling.BOX)
        image = np.asarray(image)
    if image.shape != (CANVAS, CANVAS, 3):
        raise ImageError(f"expected an image array of shape {(CANVAS, CANVAS, 3)}, got {image.shape}")
    return image.astype(np.float32)


def color_blends(image: np.ndarray, settings: DetectorSettings) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the best-explaining colour and how much of it is there.

    Each pixel v is modelled as BACKGROUND + alpha * (colour - BACKGROUND). Returns
    (colour index [H, W], alpha [H, W]); alpha is 0 where no blend explains the pixel.
    """
    offset = image - np.float32(BACKGROUND)  # [H, W, 3]
    alpha = np.clip(offset @ _DIRECTIONS.T / _SQ_NORMS, 0.0, 1.0)  # [H, W, K]
    residual = np.linalg.norm(offset[:, :, None, :] - alpha[..., None] * _DIRECTIONS, axis=-1)
    # Unexplained pixels, and pure background, carry no colour.
    residual = np.where(alpha > 0.05, residual, np.inf)  # [H, W, K]
    best = residual.argmin(axis=-1)  # [H, W]
    best_alpha = np.take_along_axis(alpha, best[..., None], axis=-1)[..., 0]
    best_residual = np.take_along_axis(residual, best[..., None], axis=-1)[..., 0]
    return best, np.where(best_residual < settings.residual, best_alpha, 0.0)


def connected_components(mask: np.ndarray) -> np.ndarray:
    """4-connected labels (0 = not in mask, 1..n) by min-label propagation; no scipy needed."""
    H, W = mask.shape
    big = H * W + 1
    labels = np.where(mask, np.arange(1, H * W + 1).reshape(H, W), big)
    while True:
        padded = np.pad(labels, 1, constant_values=big)
        neighbours = np.minimum.reduce(
            [padded[1:-1, 1:-1], padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
        )
        new = np.where(mask, neighbours, big)
        if np.array_equal(new, labels):
            break
        labels = new
    _, dense = np.unique(np.where(mask, labels, 0), return_inverse=True)
    return dense.reshape(H, W)


_PAD = 2  # templates carry this margin so a blurred edge has room
_BLURS = (0.0, 0.5, 0.8, 1.1, 1.5)  # template softness levels: a crisp render, and what a tokenizer leaves


def _gaussian_kernel(sigma: float) -> np.ndarray:
    taps = np.arange(-3, 4)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    return kernel / kernel.sum()


@cache
def soft_template(shape: str, size: int, sigma: float) -> np.ndarray:
    """The shape's mask with a _PAD margin, Gaussian-blurred by sigma (0: crisp); [s+2P, s+2P]."""
    mask = np.pad(shape_mask(shape, size).astype(np.float32), _PAD)
    if sigma == 0:
        return mask
    kernel = _gaussian_kernel(sigma)
    mask = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), 0, mask)
    return np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), 1, mask)


def _fit(soft: np.ndarray, settings: DetectorSettings) -> tuple[str, int, int, int, float]:
    """Best (shape, x0, y0, size, soft IoU) for one object's colour mass `soft` [H, W].

    Every shape, every size near the one its mass suggests, every position near the one its
    centre of mass suggests, and each template softness: the highest soft IoU wins.
    """
    mass = soft.sum()
    ys, xs = np.indices(soft.shape)
    cx, cy = (soft * xs).sum() / mass, (soft * ys).sum() / mass  # centre of mass, pixel index units
    margin = _PAD + settings.search + MAX_SIZE
    padded = np.pad(soft, margin)
    k = 2 * settings.search + 1
    best = ("", 0, 0, 0, -1.0)
    for shape in SHAPES:
        guess = int(_SIZES[np.abs(_AREAS[shape] - mass).argmin()])
        fx, fy = _CENTROIDS[shape]
        for s in range(max(MIN_SIZE, guess - settings.search), min(MAX_SIZE, guess + settings.search) + 1):
            # Top-left corners to try: k x k around the guess, kept inside the canvas.
            last = CANVAS - s - (k - 1)
            gx = min(max(round(cx + 0.5 - fx * s) - settings.search, 0), last)
            gy = min(max(round(cy + 0.5 - fy * s) - settings.search, 0), last)
            w = s + 2 * _PAD
            top, left = gy - _PAD + margin, gx - _PAD + margin
            region = padded[top : top + w + k - 1, left : left + w + k - 1]
            windows = np.lib.stride_tricks.sliding_window_view(region, (w, w))  # [k, k, w, w]
            x0s, y0s = gx + np.arange(k), gy + np.arange(k)
            for sigma in _BLURS:
                template = soft_template(shape, s, sigma)
                overlap = np.minimum(windows, template).sum(axis=(2, 3))  # [k, k]
                iou = overlap / (mass + template.sum() - overlap)
                j = int(iou.argmax())
                if iou.flat[j] > best[4]:
                    best = (shape, int(x0s[j % k]), int(y0s[j // k]), s, float(iou.flat[j]))
    return best


def _hard_iou(mask: np.ndarray, shape: str, x0: int, y0: int, s: int) -> float:
    placed = np.zeros_like(mask)
    placed[y0 : y0 + s, x0 : x0 + s] = shape_mask(shape, s)
    return float((mask & placed).sum() / (mask | placed).sum())


class WorldDetector:
    """Exact detector for the shapes world (the Detector protocol of the GenEval rule engine)."""

    classes = SHAPES

    def __init__(self, settings: DetectorSettings | None = None):
        self.settings = settings or DetectorSettings()

    def detect(self, image: Image.Image | np.ndarray) -> list[Detection]:
        pixels = as_array(image)
        color_index, alpha = color_blends(pixels, self.settings)
        detections = []
        for k, name in enumerate(_NAMES):
            of_color = (color_index == k) & (alpha > 0)
            if not of_color.any():
                continue
            cores = connected_components(of_color & (alpha >= self.settings.core))
            for label in range(1, cores.max() + 1):
                core = cores == label
                if core.sum() < self.settings.min_pixels:
                    continue
                # The object's mass: its colour's blend within 2 px of its core, which
                # reaches a soft edge but never the next object (boxes are 2 px apart).
                near = _dilate(core, 2) & of_color
                soft = np.where(near, alpha, 0.0)
                shape, x0, y0, s, iou = _fit(soft, self.settings)
                # Noise and compression lower the soft fit of a well-formed object; its
                # half-coverage outline still matches the crisp mask, so take the better.
                iou = max(iou, _hard_iou(soft >= 0.5, shape, x0, y0, s))
                detections.append(Detection(shape, (x0, y0, x0 + s, y0 + s), round(iou, 4), name))
        return sorted(detections, key=lambda d: -d.score)

    def colors(self, image: Image.Image, detections: list[Detection]) -> list[str]:
        return [d.color for d in detections]


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """Grow a mask by `steps` pixels in the 8-neighbourhood (Chebyshev distance)."""
    for _ in range(steps):
        p = np.pad(mask, 1)
        mask = p[:-2, :-2] | p[:-2, 1:-1] | p[:-2, 2:] | p[1:-1, :-2] | p[1:-1, 1:-1]
        mask = mask | p[1:-1, 2:] | p[2:, :-2] | p[2:, 1:-1] | p[2:, 2:]
    return mask
