"""The shapes world's side of the plan format: plans of scenes, and the check of world words.

A world plan names each object "[colour] shape" in the world's words and gives its pixel box on
the 0-1000 grid (pixel * 1000 / 64, rounded half up: exact to invert).
"""

from __future__ import annotations

from thinkdraw.plan import Plan, PlanObject, UnknownWordError, to_grid
from thinkdraw.world.render import WorldObject
from thinkdraw.world.spec import CANVAS, COLORS, SHAPES


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
