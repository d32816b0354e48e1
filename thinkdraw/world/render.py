"""Render shapes-world scenes, pixel-exact to the spec in DESIGN.md.

A pixel (px, py) is painted when its centre (px + 0.5, py + 0.5) lies inside the shape.
Shapes whose edges are rational are tested in integer arithmetic on doubled coordinates
(the centre of pixel i is (2i + 1) / 2), so no pixel ever flips on a rounding error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

from thinkdraw.world.spec import BACKGROUND, CANVAS, COLORS, MAX_SIZE, MIN_GAP, MIN_SIZE, SHAPES


@dataclass(frozen=True)
class WorldObject:
    """One object: a shape of one colour in the square box [x0, x0+size) x [y0, y0+size)."""

    shape: str
    color: str
    x0: int
    y0: int
    size: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) in pixels, x1 and y1 exclusive."""
        return (self.x0, self.y0, self.x0 + self.size, self.y0 + self.size)

    def check(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}")
        if self.color not in COLORS:
            raise ValueError(f"unknown colour {self.color!r}")
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise ValueError(f"size {self.size} outside [{MIN_SIZE}, {MAX_SIZE}]")
        if self.x0 < 0 or self.y0 < 0 or self.x0 + self.size > CANVAS or self.y0 + self.size > CANVAS:
            raise ValueError(f"box {self.box} leaves the {CANVAS}x{CANVAS} canvas")


def boxes_apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int = MIN_GAP) -> bool:
    """True when boxes a and b (x0, y0, x1, y1) are at least `gap` pixels apart on some axis."""
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _star_polygon(size: int) -> np.ndarray:
    """The ten vertices of the star in box coordinates: outer radius r, inner r/2, one point up."""
    r = size / 2
    angles = -math.pi / 2 + np.arange(10) * math.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, r, r / 2)
    return np.stack([r + radii * np.cos(angles), r + radii * np.sin(angles)], axis=1)  # [10, 2]


def _inside_polygon(x: np.ndarray, y: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule; the star's vertices are irrational, so no pixel centre lies on an edge."""
    inside = np.zeros(x.shape, dtype=bool)
    for (xa, ya), (xb, yb) in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
        crosses = (ya > y) != (yb > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = xa + (y - ya) * (xb - xa) / (yb - ya)
        inside ^= crosses & (x < x_cross)
    return inside


@cache
def shape_mask(shape: str, size: int) -> np.ndarray:
    """Boolean mask [size, size] (rows = y) of the pixels a shape paints in its box."""
    # Doubled coordinates relative to the box centre: X = 2*(px + 0.5) - size.
    idx = 2 * np.arange(size) + 1 - size
    X, Y = np.meshgrid(idx, idx)  # [size, size], X varies along columns
    if shape == "circle":
        mask = X * X + Y * Y <= size * size
    elif shape == "square":
        mask = np.ones((size, size), dtype=bool)
    elif shape == "triangle":
        # Apex (size/2, 0), base corners (0, size) and (size, size); in doubled box
        # coordinates (u = X + size, v = Y + size) the sides are 2u + v >= 2 size and 2u - v <= 2 size.
        u, v = X + size, Y + size
        mask = (2 * u + v >= 2 * size) & (2 * u - v <= 2 * size)
    elif shape == "diamond":
        mask = np.abs(X) + np.abs(Y) <= size
    elif shape == "cross":
        mask = (3 * np.abs(X) <= size) | (3 * np.abs(Y) <= size)
    elif shape == "star":
        centres = np.arange(size) + 0.5
        px, py = np.meshgrid(centres, centres)
        mask = _inside_polygon(px, py, _star_polygon(size))
    else:
        raise ValueError(f"unknown shape {shape!r}")
    mask.setflags(write=False)
    return mask


def render(objects: list[WorldObject] | tuple[WorldObject, ...]) -> np.ndarray:
    """Paint the objects on the grey canvas; returns uint8 [CANVAS, CANVAS, 3]."""
    image = np.empty((CANVAS, CANVAS, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    for obj in objects:
        obj.check()
        window = image[obj.y0 : obj.y0 + obj.size, obj.x0 : obj.x0 + obj.size]  # [s, s, 3]
        window[shape_mask(obj.shape, obj.size)] = COLORS[obj.color]
    return image


def render_image(objects: list[WorldObject] | tuple[WorldObject, ...]) -> Image.Image:
    return Image.fromarray(render(objects), mode="RGB")
