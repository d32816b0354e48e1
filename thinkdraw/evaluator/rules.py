"""GenEval's rules, over any detector (PAPERS.md, section E).

Settings are the official ones: a detection counts when its score is strictly above 0.3
(0.9 on counting prompts), at most 16 per class, no NMS, position margin 0.1. Given the
same detections and colours, `judge` reaches the official verdict; its failure reasons are
structured so that callers (plan checks, rewards, PARM++ feedback) can tell a wrong count
from a wrong colour or a wrong place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from thinkdraw.errors import MetadataError
from thinkdraw.evaluator.detection import Detection, Detector

THRESHOLD = 0.3
COUNTING_THRESHOLD = 0.9
MAX_OBJECTS = 16
POSITION_THRESHOLD = 0.1
RELATIONS = ("left of", "right of", "above", "below")
COLOR_NAMES = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")


@dataclass(frozen=True)
class Failure:
    kind: str  # "count" | "color" | "position" | "exclude"
    clause: int  # index of the include (or exclude) clause that failed
    message: str


@dataclass(frozen=True)
class Verdict:
    correct: bool
    failures: tuple[Failure, ...] = ()
    detections: dict[str, list[Detection]] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        """Official format: one line per failure, empty when correct."""
        return "\n".join(f.message for f in self.failures)


def relations(a: tuple[float, ...], b: tuple[float, ...]) -> set[str]:
    """Where box a stands relative to box b ((x0, y0, x1, y1), y grows downward).

    The offset between centres is shrunk on each axis by 0.1 of the two boxes' summed
    extent; what is left, as a share of the full offset, must exceed 0.5 on an axis.
    """
    ca = np.array([(a[0] + a[2]) / 2, (a[1] + a[3]) / 2])
    cb = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
    dims = np.array([a[2] - a[0] + b[2] - b[0], a[3] - a[1] + b[3] - b[1]])
    offset = ca - cb
    revised = np.maximum(np.abs(offset) - POSITION_THRESHOLD * dims, 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    found = set()
    if dx < -0.5:
        found.add("left of")
    if dx > 0.5:
        found.add("right of")
    if dy < -0.5:
        found.add("above")
    if dy > 0.5:
        found.add("below")
    return found


def group_detections(detections: list[Detection], tag: str) -> dict[str, list[Detection]]:
    """Per class, the detections above the task's threshold, most confident first, at most 16.

    Ties go as in the official code, which reverses an ascending argsort of the scores (stable for the few
    detections of a class): of equally confident detections the one listed last counts as the most confident.
    """
    threshold = COUNTING_THRESHOLD if tag == "counting" else THRESHOLD
    grouped: dict[str, list[Detection]] = {}
    order = sorted(range(len(detections)), key=lambda i: detections[i].score)  # ascending, stable
    for det in (detections[i] for i in reversed(order)):
        if det.score > threshold and len(grouped.setdefault(det.label, [])) < MAX_OBJECTS:
            grouped[det.label].append(det)
    return {label: dets for label, dets in grouped.items() if dets}


def judge(metadata: dict, detections: list[Detection], colors_of=None) -> Verdict:
    """Apply GenEval's include / exclude rules to one image's detections.

    `colors_of(dets) -> list[str]` names the colours of detections when a clause asks;
    by default each detection's own `color` is used.
    """
    colors_of = colors_of or (lambda dets: [d.color for d in dets])
    found = group_detections(detections, metadata["tag"])
    failures: list[Failure] = []
    matched: list[list[Detection] | None] = []
    for i, clause in enumerate(metadata.get("include", [])):
        name, count = clause["class"], clause["count"]
        objects = found.get(name, [])[:count]
        ok = len(objects) >= count
        if not ok:
            failures.append(Failure("count", i, f"expected {name}>={count}, found {len(objects)}"))
        if ok and "color" in clause:
            colors = colors_of(objects)
            want = clause["color"]
            if colors.count(want) < count:
                ok = False
                seen = ", ".join(f"{colors.count(c)} {c}" for c in COLOR_NAMES if c in colors)
                failures.append(
                    Failure(
                        "color", i, f"expected {want} {name}>={count}, found {colors.count(want)} {want}; and {seen}"
                    )
                )
        if ok and "position" in clause:
            rel, target = clause["position"]
            if matched[target] is None:
                ok = False
                failures.append(Failure("position", i, f"no target for {name} to be {rel}"))
            else:
                for obj in objects:
                    for other in matched[target]:
                        true_rels = relations(obj.box, other.box)
                        if rel not in true_rels:
                            ok = False
                            failures.append(
                                Failure(
                                    "position",
                                    i,
                                    f"expected {name} {rel} target, found {' and '.join(sorted(true_rels))} target",
                                )
                            )
                            break
                    if not ok:
                        break
        matched.append(objects if ok else None)
    for j, clause in enumerate(metadata.get("exclude", [])):
        name, count = clause["class"], clause["count"]
        if len(found.get(name, [])) >= count:
            failures.append(Failure("exclude", j, f"expected {name}<{count}, found {len(found[name])}"))
    return Verdict(not failures, tuple(failures), found)


def judge_image(metadata: dict, image: Image.Image, detector: Detector) -> Verdict:
    detections = detector.detect(image)
    return judge(metadata, detections, lambda dets: detector.colors(image, dets))


def validate_metadata(metadata: object, classes: tuple[str, ...] | None = None) -> dict:
    """Check one metadata record against GenEval's schema; raise MetadataError saying what is wrong."""
    if not isinstance(metadata, dict):
        raise MetadataError("metadata must be a JSON object")
    for key in ("tag", "prompt"):
        if not isinstance(metadata.get(key), str) or not metadata[key]:
            raise MetadataError(f"metadata needs a non-empty string '{key}'")
    include = metadata.get("include")
    if not isinstance(include, list) or not include:
        raise MetadataError("metadata needs a non-empty list 'include'")
    exclude = metadata.get("exclude", [])
    if not isinstance(exclude, list):
        raise MetadataError("'exclude' must be a list")
    for kind, clauses in (("include", include), ("exclude", exclude)):
        for i, clause in enumerate(clauses):
            where = f"{kind}[{i}]"
            if not isinstance(clause, dict):
                raise MetadataError(f"{where} must be an object")
            name = clause.get("class")
            if not isinstance(name, str) or not name:
                raise MetadataError(f"{where} needs a string 'class'")
            if classes is not None and name not in classes:
                raise MetadataError(f"{where}: class {name!r} is not one the detector knows ({', '.join(classes)})")
            count = clause.get("count")
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise MetadataError(f"{where} needs a positive integer 'count'")
            unknown = set(clause) - {"class", "count", "color", "position"}
            if unknown:
                raise MetadataError(f"{where} has unknown keys {sorted(unknown)}")
            if "color" in clause and clause["color"] not in COLOR_NAMES:
                raise MetadataError(f"{where}: colour {clause['color']!r} is not one of GenEval's ten")
            if "position" in clause:
                pos = clause["position"]
                ok = (
                    isinstance(pos, list)
                    and len(pos) == 2
                    and pos[0] in RELATIONS
                    and isinstance(pos[1], int)
                    and not isinstance(pos[1], bool)
                )
                if not ok or kind == "exclude" or not 0 <= pos[1] < i:
                    raise MetadataError(f"{where}: position must be [relation, index of an earlier include clause]")
    return metadata
