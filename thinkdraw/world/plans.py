"""The shapes world's side of the plan format: plans of scenes, the check of world words, the layout rules.

A world plan names each object "[colour] shape" in the world's words and gives its pixel box on
the 0-1000 grid (pixel * 1000 / 64, rounded half up: exact to invert).
"""

from __future__ import annotations

from itertools import combinations

from thinkdraw.plan import Plan, PlanObject, UnknownWordError, to_grid
from thinkdraw.world.render import WorldObject, boxes_apart
from thinkdraw.world.spec import CANVAS, COLORS, MAX_SIZE, MIN_GAP, MIN_SIZE, SHAPES


def plan_of_scene(objects: list[WorldObject], with_color: bool = True) -> Plan:
    """The plan of a scene, objects in the scene's order."""
    entries = []
    for o in objects:
        phrase = f"{o.color} {o.shape}" if with_color else o.shape
        entries.append(PlanObject(phrase, to_grid(o.box, CANVAS)))
    return Plan(tuple(entries))


def world_words_of(obj: PlanObject, number: int = 1) -> tuple[str, str | None]:
    """(shape, colour or None) of a plan entry; UnknownWordError unless its phrase is '[colour] shape'."""
    words = obj.phrase.split()
    shape, color = words[-1], (words[0] if len(words) == 2 else None)
    if len(words) > 2 or shape not in SHAPES or (color is not None and color not in COLORS):
        raise UnknownWordError(f"plan entry {number}: {obj.phrase!r} is not '[colour] shape'")
    return shape, color


def check_world_words(plan: Plan) -> Plan:
    """The plan, when every phrase is '[colour] shape' in world words; else UnknownWordError naming the entry."""
    for number, obj in enumerate(plan.objects, start=1):
        world_words_of(obj, number)
    return plan


def layout_rules(plan: Plan) -> tuple[float, list[str]]:
    """The share of the world's layout rules a plan keeps, and the rules it breaks. Every scene the world draws
    keeps them (DESIGN.md), so they are all its drawer has seen: each box square and MIN_SIZE to MAX_SIZE pixels
    a side, each pair of boxes at least MIN_GAP pixels apart. (rewards.layout_reward reads them.)"""
    boxes = [tuple(round(v) for v in o.pixel_box(CANVAS)) for o in plan.objects]
    broken = []
    for number, (x0, y0, x1, y1) in enumerate(boxes, start=1):
        width, height = x1 - x0, y1 - y0
        if width != height:
            broken.append(f"box {number} is {width}x{height} pixels, not square")
        if not (MIN_SIZE <= min(width, height) and max(width, height) <= MAX_SIZE):
            broken.append(f"box {number} is {width}x{height} pixels, outside {MIN_SIZE}-{MAX_SIZE}")
    for (i, a), (j, b) in combinations(enumerate(boxes, start=1), 2):
        if not boxes_apart(a, b):
            broken.append(f"boxes {i} and {j} are closer than {MIN_GAP} pixels")
    checks = 2 * len(boxes) + len(boxes) * (len(boxes) - 1) // 2
    return 1 - len(broken) / checks, broken
