"""Layouts: where objects go on the canvas.

`random_layout` places any objects without overlap; `solve_layout` finds a scene that a
prompt's GenEval metadata judges correct (the ground truth a prompt is drawn from).
Both take an explicit random.Random so a seed fixes the result.
"""

from __future__ import annotations

import random

from thinkdraw.errors import LayoutError
from thinkdraw.evaluator.detection import Detection
from thinkdraw.evaluator.rules import judge
from thinkdraw.world.prompts import mention_order
from thinkdraw.world.render import WorldObject, boxes_apart
from thinkdraw.world.spec import CANVAS, COLORS, MAX_SIZE, MIN_SIZE, SHAPES

# The largest size that still leaves room for n objects: about 45% of the canvas covered.
_FILL = 0.45


def max_size_for(n: int) -> int:
    return max(MIN_SIZE, min(MAX_SIZE, int((_FILL * CANVAS * CANVAS / max(n, 1)) ** 0.5)))


def _region_for(relation: str, subject: bool, split: int) -> tuple[int, int, int, int]:
    """The part of the canvas (x0, y0, x1, y1) where a relation's subject or target goes."""
    first = (relation in ("left of", "above")) == subject  # does this side get the low coordinates?
    lo, hi = (0, split) if first else (split, CANVAS)
    return (lo, 0, hi, CANVAS) if relation in ("left of", "right of") else (0, lo, CANVAS, hi)


def place(
    rng: random.Random,
    items: list[tuple[str, str]],
    regions: list[tuple[int, int, int, int]] | None = None,
    tries: int = 200,
) -> list[WorldObject] | None:
    """Put (shape, colour) items in their regions, non-overlapping; None if they do not fit."""
    regions = regions or [(0, 0, CANVAS, CANVAS)] * len(items)
    top = max_size_for(len(items))
    placed: list[WorldObject] = []
    for (shape, color), (rx0, ry0, rx1, ry1) in zip(items, regions, strict=True):
        for _ in range(tries):
            if min(rx1 - rx0, ry1 - ry0) < MIN_SIZE:
                return None
            size = rng.randint(MIN_SIZE, min(top, rx1 - rx0, ry1 - ry0))
            obj = WorldObject(shape, color, rng.randint(rx0, rx1 - size), rng.randint(ry0, ry1 - size), size)
            if all(boxes_apart(obj.box, other.box) for other in placed):
                placed.append(obj)
                break
        else:
            return None
    return placed


def scatter(rng: random.Random, items: list[tuple[str, str]]) -> list[WorldObject]:
    """(shape, colour) items placed anywhere on the canvas."""
    for _ in range(100):
        objects = place(rng, items)
        if objects is not None:
            return objects
    raise LayoutError(f"could not place {len(items)} objects on the canvas")


def random_layout(rng: random.Random, n: int) -> list[WorldObject]:
    """n objects of random shape and colour (the chance-level baseline and VQ training data)."""
    return scatter(rng, [(rng.choice(SHAPES), rng.choice(list(COLORS))) for _ in range(n)])


def as_detections(objects: list[WorldObject]) -> list[Detection]:
    """What a perfect detector would report for these objects."""
    return [Detection(o.shape, tuple(float(v) for v in o.box), 1.0, o.color) for o in objects]


def solve_layout(metadata: dict, rng: random.Random, attempts: int = 300) -> list[WorldObject]:
    """A scene the GenEval rules judge correct for this metadata (exactly the objects it names).

    Uncoloured objects get a random colour. A relation puts its subject and its target on
    either side of a random split line, then every attempt is checked by the rules themselves.
    The objects come in the order the prompt names them, a clause's own top to bottom then left
    to right, so a plan written from the scene follows the prompt.
    """
    include = metadata["include"]
    for _ in range(attempts):
        items, regions, clauses = [], [], []
        split = rng.randint(24, 40)
        # The objects of a clause stand on its side of the split when a relation involves it.
        sides: dict[int, tuple[str, bool]] = {}
        for i, clause in enumerate(include):
            if "position" in clause:
                relation, target = clause["position"]
                sides[i] = (relation, True)
                sides.setdefault(target, (relation, False))
        for i, clause in enumerate(include):
            for _ in range(clause["count"]):
                items.append((clause["class"], clause.get("color") or rng.choice(list(COLORS))))
                clauses.append(i)
                if i in sides:
                    regions.append(_region_for(*sides[i], split))
                else:
                    regions.append((0, 0, CANVAS, CANVAS))
        order = list(range(len(items)))
        rng.shuffle(order)
        objects = place(rng, [items[k] for k in order], [regions[k] for k in order])
        if objects is not None and judge(metadata, as_detections(objects)).correct:
            rank = {clause: r for r, clause in enumerate(mention_order(include))}
            placed = sorted(zip(order, objects, strict=True), key=lambda p: (rank[clauses[p[0]]], p[1].y0, p[1].x0))
            return [obj for _, obj in placed]
    raise LayoutError(f"no layout found for {metadata['prompt']!r} in {attempts} attempts")
