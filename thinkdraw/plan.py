"""The reasoning plan: GoT-style object phrases, each followed by its box.

Text form, one entry per object, entries joined by "; ":
    red circle (156,234),(438,516); star (625,94),(906,375)
A box is (x1,y1),(x2,y2) on GoT's 0-1000 grid, origin top-left (pixel * 1000 / 64, rounded);
the colour is optional. `parse_plan` raises a typed PlanError for malformed text, so a
reward or verifier can tell "unparseable" from "wrong".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from thinkdraw.errors import ThinkdrawError
from thinkdraw.evaluator.detection import Detection
from thinkdraw.evaluator.rules import judge, relations
from thinkdraw.world.render import WorldObject
from thinkdraw.world.spec import BACKGROUND, CANVAS, COLORS, PLAN_GRID, SHAPES

SEPARATOR = "; "


class PlanError(ThinkdrawError):
    """Plan text that cannot be read."""


class EmptyPlanError(PlanError):
    pass


class PlanSyntaxError(PlanError):
    pass


class UnknownWordError(PlanError):
    pass


class PlanBoxError(PlanError):
    pass


@dataclass(frozen=True)
class PlanObject:
    shape: str
    color: str | None
    box: tuple[int, int, int, int]  # (x1, y1, x2, y2) on the 0-1000 grid

    def text(self) -> str:
        phrase = f"{self.color} {self.shape}" if self.color else self.shape
        x1, y1, x2, y2 = self.box
        return f"{phrase} ({x1},{y1}),({x2},{y2})"

    def pixel_box(self) -> tuple[float, float, float, float]:
        return tuple(v * CANVAS / PLAN_GRID for v in self.box)


@dataclass(frozen=True)
class Plan:
    objects: tuple[PlanObject, ...]

    def text(self) -> str:
        return SEPARATOR.join(o.text() for o in self.objects)

    def as_detections(self) -> list[Detection]:
        """The plan read as a perfect detector's output, for the GenEval rules."""
        return [Detection(o.shape, o.pixel_box(), 1.0, o.color) for o in self.objects]

    @classmethod
    def from_scene(cls, objects: list[WorldObject], with_color: bool = True) -> Plan:
        return cls(tuple(PlanObject(o.shape, o.color if with_color else None, to_grid(o.box)) for o in objects))


def to_grid(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Pixel box -> 0-1000 grid, rounded half up (exact to invert for pixel coordinates)."""
    return tuple(math.floor(v * PLAN_GRID / CANVAS + 0.5) for v in box)


_ENTRY = re.compile(
    r"^(?P<phrase>[a-z][a-z ]*?)\s*\(\s*(-?\d+)\s*,\s*(-?\d+)\s*\)\s*,\s*\(\s*(-?\d+)\s*,\s*(-?\d+)\s*\)$"
)


def parse_plan(text: str) -> Plan:
    """Read plan text; raises EmptyPlanError, PlanSyntaxError, UnknownWordError or PlanBoxError."""
    entries = [e.strip() for e in text.strip().split(";") if e.strip()]
    if not entries:
        raise EmptyPlanError("the plan names no objects")
    objects = []
    for number, entry in enumerate(entries, start=1):
        match = _ENTRY.match(entry)
        if not match:
            raise PlanSyntaxError(f"plan entry {number} is not 'phrase (x1,y1),(x2,y2)': {entry!r}")
        words = match["phrase"].split()
        shape, color = words[-1], (words[0] if len(words) == 2 else None)
        if len(words) > 2 or shape not in SHAPES or (color is not None and color not in COLORS):
            raise UnknownWordError(f"plan entry {number}: {match['phrase']!r} is not '[colour] shape'")
        x1, y1, x2, y2 = (int(match[i]) for i in range(2, 6))
        if not (0 <= x1 < x2 <= PLAN_GRID and 0 <= y1 < y2 <= PLAN_GRID):
            raise PlanBoxError(
                f"plan entry {number}: box ({x1},{y1}),({x2},{y2}) is not a box on the 0-{PLAN_GRID} grid"
            )
        objects.append(PlanObject(shape, color, (x1, y1, x2, y2)))
    return Plan(tuple(objects))


@dataclass(frozen=True)
class PlanCheck:
    semantic: bool  # every object, colour and count of the prompt, nothing excluded
    spatial: bool | None  # every relation holds between the planned boxes; None: nothing to check
    failures: tuple[str, ...]


def check_plan(plan: Plan, metadata: dict) -> PlanCheck:
    """Check a plan against a prompt's GenEval metadata, by the same rules as images.

    Semantic: the include / exclude rules on the planned objects, relations aside.
    Spatial: for each relation clause, every planned object of the subject's class
    must stand in that relation to every planned object of the target's class (the
    position rule on the planned boxes); a clause with either side missing from the plan
    cannot be checked and is left out, so a plan with nothing to check gets None.
    """
    semantic = [f.message for f in judge(metadata, plan.as_detections()).failures if f.kind != "position"]
    failures = list(semantic)
    include = metadata["include"]
    checked, spatial_ok = False, True
    for clause in include:
        if "position" not in clause:
            continue
        relation, target = clause["position"]
        subjects = [o for o in plan.objects if o.shape == clause["class"]]
        targets = [o for o in plan.objects if o.shape == include[target]["class"]]
        if not subjects or not targets:
            continue
        checked = True
        for a in subjects:
            for b in targets:
                if relation not in relations(a.pixel_box(), b.pixel_box()):
                    spatial_ok = False
                    failures.append(f"planned {a.text()} is not {relation} {b.text()}")
    return PlanCheck(not semantic, spatial_ok if checked else None, tuple(failures))


def draw_plan(plan: Plan, size: int = 256) -> Image.Image:
    """The plan's boxes on a blank canvas, filled lightly in their colour and labelled."""
    canvas = Image.new("RGB", (size, size), BACKGROUND)
    overlay = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    font = ImageFont.load_default(size=max(9, size // 22))
    scale = size / PLAN_GRID
    for obj in plan.objects:
        rgb = COLORS[obj.color] if obj.color else (60, 60, 60)
        x1, y1, x2, y2 = (v * scale for v in obj.box)
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=rgb + (110,), outline=rgb + (255,), width=2)
        label = f"{obj.color} {obj.shape}" if obj.color else obj.shape
        ink = (0, 0, 0, 255) if sum(rgb) > 300 else (255, 255, 255, 255)
        draw.text((x1 + 3, y1 + 2), label, fill=ink, font=font)
    return Image.alpha_composite(canvas.convert("RGBA"), overlay).convert("RGB")
