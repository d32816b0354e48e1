"""A plan checked against a prompt's GenEval metadata, by the same rules as images.

The plan is read as a perfect detector's output: each phrase names the metadata class it ends
with (the longest such class: "teddy bear" before "bear") and the GenEval colour word before it,
if any ("red teddy bear" -> teddy bear, red). A phrase naming no class of the prompt is an object
the prompt did not ask for; it counts towards nothing. Boxes stay on the plan's grid: GenEval's
relations compare offsets with box sizes, so they do not depend on the scale.
"""

from __future__ import annotations

from dataclasses import dataclass

from thinkdraw.evaluator.detection import Detection
from thinkdraw.evaluator.rules import COLOR_NAMES, judge, relations
from thinkdraw.plan import Plan, PlanObject


def metadata_classes(metadata: dict) -> list[str]:
    """Every class the metadata's include and exclude clauses name."""
    return [c["class"] for c in metadata.get("include", []) + metadata.get("exclude", [])]


def read_phrase(phrase: str, classes: list[str]) -> tuple[str, str | None]:
    """(class, colour) of a plan phrase among `classes`; the class is the whole phrase when none fits."""
    words = phrase.lower().split()
    best = None
    for name in classes:
        n = len(name.split())
        if words[-n:] == name.split() and (best is None or n > len(best.split())):
            best = name
    if best is None:
        return phrase.lower(), None
    before = words[: len(words) - len(best.split())]
    color = next((w for w in reversed(before) if w in COLOR_NAMES), None)
    return best, color


def as_detections(plan: Plan, classes: list[str]) -> list[Detection]:
    """The plan as a perfect detector's output (score 1, boxes on the plan grid)."""
    detections = []
    for obj in plan.objects:
        label, color = read_phrase(obj.phrase, classes)
        detections.append(Detection(label, tuple(float(v) for v in obj.box), 1.0, color))
    return detections


@dataclass(frozen=True)
class PlanCheck:
    semantic: bool  # every object, colour and count of the prompt, nothing excluded
    spatial: bool | None  # every relation holds between the planned boxes; None: nothing to check
    failures: tuple[str, ...]


def check_plan(plan: Plan, metadata: dict) -> PlanCheck:
    """Check a plan against a prompt's GenEval metadata.

    Semantic: the include / exclude rules on the planned objects, relations aside.
    Spatial: for each relation clause, every planned object of the subject's class must stand in
    that relation to every planned object of the target's class (the position rule on the planned
    boxes); a clause with either side missing from the plan cannot be checked and is left out, so a
    plan with nothing to check gets None."""
    classes = metadata_classes(metadata)
    detections = as_detections(plan, classes)
    semantic = [f.message for f in judge(metadata, detections).failures if f.kind != "position"]
    failures = list(semantic)
    include = metadata["include"]
    checked, spatial_ok = False, True
    for clause in include:
        if "position" not in clause:
            continue
        relation, target = clause["position"]
        subjects = _objects_of(plan, detections, clause["class"])
        targets = _objects_of(plan, detections, include[target]["class"])
        if not subjects or not targets:
            continue
        checked = True
        for a in subjects:
            for b in targets:
                if relation not in relations(a.box, b.box):
                    spatial_ok = False
                    failures.append(f"planned {a.text()} is not {relation} {b.text()}")
    return PlanCheck(not semantic, spatial_ok if checked else None, tuple(failures))


def _objects_of(plan: Plan, detections: list[Detection], name: str) -> list[PlanObject]:
    return [o for o, d in zip(plan.objects, detections, strict=True) if d.label == name]
