"""The reasoning plan: GoT-R1's format, open-vocabulary: object phrases, each followed by its box.

Text form, one entry per object, entries joined by "; ":
    red teddy bear (112,40),(540,610); blue bench (600,300),(990,800)
A box is (x1,y1),(x2,y2) on GoT's 0-1000 grid, origin top-left. A phrase is any text without
brackets or semicolons ("red circle", "a small wooden chair"). `parse_plan` raises a typed
PlanError for malformed text, so a reward or verifier can tell "unparseable" from "wrong".
What a phrase may name is the model's business: the shapes world checks its words on its own
side (`thinkdraw.world.plans`), raising this module's UnknownWordError.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from PIL import Image, ImageColor, ImageDraw, ImageFont

from thinkdraw.errors import ThinkdrawError

GRID = 1000  # GoT's box grid: 0..GRID on both axes
REASONING = ("plan", "rationale")  # what a model may write before drawing: GoT-R1's plan, ReasonGen-R1's rationale
SEPARATOR = "; "


class PlanError(ThinkdrawError):
    """Plan text that cannot be read."""


class EmptyPlanError(PlanError):
    pass


class PlanSyntaxError(PlanError):
    pass


class UnknownWordError(PlanError):
    """A phrase with words the model's vocabulary does not have (raised by vocabulary checks)."""


class PlanBoxError(PlanError):
    pass


@dataclass(frozen=True)
class PlanObject:
    phrase: str  # "red teddy bear": what the object is, as written
    box: tuple[int, int, int, int]  # (x1, y1, x2, y2) on the 0-1000 grid

    def text(self) -> str:
        x1, y1, x2, y2 = self.box
        return f"{self.phrase} ({x1},{y1}),({x2},{y2})"

    def pixel_box(self, size: int) -> tuple[float, float, float, float]:
        """The box in pixels of a size x size image."""
        return tuple(v * size / GRID for v in self.box)


@dataclass(frozen=True)
class Plan:
    objects: tuple[PlanObject, ...]

    def text(self) -> str:
        return SEPARATOR.join(o.text() for o in self.objects)


def to_grid(box: tuple[int, int, int, int], size: int) -> tuple[int, int, int, int]:
    """Pixel box of a size x size image -> 0-1000 grid, rounded half up (exact to invert for pixel coordinates
    while size <= GRID)."""
    return tuple(math.floor(v * GRID / size + 0.5) for v in box)


_ENTRY = re.compile(r"^(?P<phrase>[^();]*?)\s*\(\s*(-?\d+)\s*,\s*(-?\d+)\s*\)\s*,\s*\(\s*(-?\d+)\s*,\s*(-?\d+)\s*\)$")


def parse_plan(text: str) -> Plan:
    """Read plan text; raises EmptyPlanError, PlanSyntaxError or PlanBoxError."""
    entries = [e.strip() for e in text.strip().split(";") if e.strip()]
    if not entries:
        raise EmptyPlanError("the plan names no objects")
    objects = []
    for number, entry in enumerate(entries, start=1):
        match = _ENTRY.match(entry)
        if not match or not match["phrase"].strip():
            raise PlanSyntaxError(f"plan entry {number} is not 'phrase (x1,y1),(x2,y2)': {entry!r}")
        x1, y1, x2, y2 = (int(match[i]) for i in range(2, 6))
        if not (0 <= x1 < x2 <= GRID and 0 <= y1 < y2 <= GRID):
            raise PlanBoxError(f"plan entry {number}: box ({x1},{y1}),({x2},{y2}) is not a box on the 0-{GRID} grid")
        objects.append(PlanObject(" ".join(match["phrase"].split()), (x1, y1, x2, y2)))
    return Plan(tuple(objects))


RGB = tuple[int, int, int]


def readable_entries(text: str) -> list[PlanObject]:
    """The entries of plan text that parse, the others skipped (for guidance from a plan still being judged)."""
    objects = []
    for entry in text.split(";"):
        try:
            objects += parse_plan(entry).objects
        except PlanError:
            continue
    return objects


def _ink(phrase: str, palette: dict[str, RGB]) -> RGB:
    """The colour a phrase names first (palette first, then PIL's colour names); dark grey when none."""
    for word in phrase.lower().split():
        if word in palette:
            return palette[word]
        try:
            return ImageColor.getrgb(word)[:3]
        except ValueError:
            continue
    return (60, 60, 60)


def draw_plan(
    plan: Plan, size: int = 256, background: RGB = (128, 128, 128), palette: dict[str, RGB] | None = None
) -> Image.Image:
    """The plan's boxes on a blank canvas, filled lightly in the colour their phrase names and labelled
    (GoT-R1's R_spa judges this picture; people look at it beside the image). `palette`: colour names to RGB
    ahead of PIL's (a world's exact colours)."""
    canvas = Image.new("RGB", (size, size), background)
    overlay = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    font = ImageFont.load_default(size=max(9, size // 22))
    for obj in plan.objects:
        rgb = _ink(obj.phrase, palette or {})
        x1, y1, x2, y2 = obj.pixel_box(size)
        # a box under a pixel wide at this size is still drawn, one pixel wide
        draw.rectangle((x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)), fill=rgb + (110,), outline=rgb + (255,), width=2)
        ink = (0, 0, 0, 255) if sum(rgb) > 300 else (255, 255, 255, 255)
        draw.text((x1 + 3, y1 + 2), obj.phrase, fill=ink, font=font)
    return Image.alpha_composite(canvas.convert("RGBA"), overlay).convert("RGB")
