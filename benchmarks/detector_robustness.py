"""How well the exact world detector reads scenes, clean and degraded.

For each degradation it renders the same seeded random scenes (1-6 objects), degrades
them, detects, and matches detections to the truth one to one. An object is "right"
when a detection has its shape, colour and box exactly; "label right" when shape and
colour match a detection whose box centre is within 2 px. Also: extra detections,
true objects scored at or under 0.9 (GenEval's counting threshold),
scenes read wholly right, mean score, and images per second.

    python benchmarks/detector_robustness.py --scenes 2000
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

from thinkdraw.world.degrade import degrade
from thinkdraw.world.detector import WorldDetector
from thinkdraw.world.layout import random_layout
from thinkdraw.world.render import render_image

DEGRADATIONS = (
    "none",
    "blur:0.5",
    "blur:0.8",
    "blur:1.0",
    "noise:6",
    "noise:12",
    "noise:20",
    "jpeg:90",
    "jpeg:75",
    "jpeg:50",
)


def match(truth, detections):
    """(exact, label_right, extra) counts for one scene, matching greedily by box centre."""
    remaining = list(detections)
    exact = label = 0
    for obj in truth:
        cx, cy = obj.x0 + obj.size / 2, obj.y0 + obj.size / 2
        near = [
            d
            for d in remaining
            if abs((d.box[0] + d.box[2]) / 2 - cx) <= 2 and abs((d.box[1] + d.box[3]) / 2 - cy) <= 2
        ]
        if not near:
            continue
        best = min(near, key=lambda d: abs((d.box[0] + d.box[2]) / 2 - cx) + abs((d.box[1] + d.box[3]) / 2 - cy))
        remaining.remove(best)
        if best.label == obj.shape and best.color == obj.color:
            label += 1
            exact += tuple(best.box) == obj.box
    return exact, label, len(remaining)


def low_scores(truth, detections, threshold=0.9):
    """True objects read right but with a score at or under GenEval's counting threshold."""
    return sum(
        1 for d in detections if d.score <= threshold and (d.label, d.color) in {(o.shape, o.color) for o in truth}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--degradations", nargs="*", default=list(DEGRADATIONS))
    args = parser.parse_args()

    rng = random.Random(args.seed)
    scenes = [random_layout(rng, rng.randint(1, 6)) for _ in range(args.scenes)]
    images = [render_image(s) for s in scenes]
    detector = WorldDetector()
    total_objects = sum(len(s) for s in scenes)
    print(f"{args.scenes} scenes, {total_objects} objects")
    columns = ("exact", "label", "extra", "scenes", "score", "<=0.9", "img/s")
    print(f"{'degradation':<12} " + " ".join(f"{c:>8}" for c in columns))
    for name in args.degradations:
        noise_rng = np.random.default_rng(args.seed)
        degraded = [degrade(image, name, noise_rng) for image in images]
        exact = label = extra = whole = low = 0
        scores = []
        start = time.perf_counter()
        for scene, image in zip(scenes, degraded, strict=True):
            detections = detector.detect(image)
            e, l, x = match(scene, detections)
            exact, label, extra = exact + e, label + l, extra + x
            whole += e == len(scene) and x == 0
            scores += [d.score for d in detections]
            low += low_scores(scene, detections)
        rate = len(scenes) / (time.perf_counter() - start)
        print(
            f"{name:<12} {exact / total_objects:>8.2%} {label / total_objects:>8.2%} {extra:>8d} "
            f"{whole / len(scenes):>8.2%} {np.mean(scores):>8.3f} {low / total_objects:>8.2%} {rate:>8.1f}"
        )


if __name__ == "__main__":
    main()
