"""Does a world policy draw what it plans? Diagnostics on the world's splits, written as JSON.

Given ground-truth plans (each prompt's plan from `solve_layout`, seeded by its index), for every
temperature x CFG scale asked for:
- GenEval's rules per task (and overall over GenEval's six and over all tasks);
- box hit rate: the share of planned objects found by the exact detector with the planned shape and
  colour at IoU >= 0.5 with the planned box;
- extra objects per image: detections that match no planned object (same shape and colour, IoU >= 0.5).
With the model's own plans (think, at the first temperature and CFG scale given; `--reasoning plan
rationale none` also scores its own rationales and drawing with no thinking, GenEval only): parse rate,
check_plan pass rate per task (semantic, and semantic + spatial), the share of planned boxes that are
square in pixels (every world box is), and how often a right plan is drawn right when its boxes keep all the
world's layout rules (world.plans.layout_rules: square, 12-24 pixels, 2 apart) and when they do not.
Temperature and CFG scale default to the model's own (its checkpoint's generation config; after a plan its
image temperature may differ from the one without).

    python benchmarks/plan_following.py --prompts 80 --temperatures 1.0 0.7 --cfg-scales 5 --out pf.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict

from thinkdraw.engine.sampling import SamplingSettings
from thinkdraw.evaluator.geneval import GENEVAL_TASKS
from thinkdraw.evaluator.plans import check_plan
from thinkdraw.evaluator.rules import judge_image
from thinkdraw.plan import PlanError, parse_plan
from thinkdraw.policy.model import Policy
from thinkdraw.rewards import iou
from thinkdraw.runtime import Runtime
from thinkdraw.world.detector import WorldDetector
from thinkdraw.world.layout import solve_layout
from thinkdraw.world.plans import layout_rules, plan_of_scene, world_words_of
from thinkdraw.world.registry import SHIPPED_MODELS
from thinkdraw.world.spec import CANVAS
from thinkdraw.world.splits import load_split


def match(planned: list[tuple[str, str | None, tuple]], detections) -> tuple[int, int]:
    """(planned objects hit, detections matching no planned object), greedily one to one."""
    free = list(detections)
    hits = 0
    for shape, color, box in planned:
        best = max(
            (d for d in free if d.label == shape and (color is None or d.color == color)),
            key=lambda d: iou(d.box, box),
            default=None,
        )
        if best is not None and iou(best.box, box) >= 0.5:
            hits += 1
            free.remove(best)
    return hits, len(free)


def summarize(correct: dict[str, list[bool]]) -> dict:
    tasks = {tag: sum(v) / len(v) for tag, v in sorted(correct.items())}
    six = [tasks[t] for t in GENEVAL_TASKS if t in tasks]
    return {
        "tasks": tasks,
        "geneval_six": sum(six) / len(six) if len(six) == len(GENEVAL_TASKS) else None,
        "all_tasks": sum(tasks.values()) / len(tasks),
    }


def given_plans(policy, records, indices, args, settings: SamplingSettings) -> dict:
    detector = WorldDetector()
    correct: dict[str, list[bool]] = defaultdict(list)
    planned_total = hits_total = extra_total = images = 0
    for start in range(0, len(records), args.batch):
        chunk = list(range(start, min(start + args.batch, len(records))))
        plans = [plan_of_scene(solve_layout(records[i], random.Random(indices[i]))) for i in chunk]
        candidates = policy.generate(
            [records[i]["prompt"] for i in chunk],
            n=args.images_per_prompt,
            seed=args.seed,
            settings=settings,
            indices=[indices[i] for i in chunk],
            plans=[p.text() for p in plans],
        )
        for k, i in enumerate(chunk):
            planned = [(*world_words_of(o), o.pixel_box(CANVAS)) for o in plans[k].objects]
            for c in candidates[k * args.images_per_prompt : (k + 1) * args.images_per_prompt]:
                correct[records[i]["tag"]].append(judge_image(records[i], c.image, detector).correct)
                hits, extra = match(planned, detector.detect(c.image))
                planned_total, hits_total, extra_total = (
                    planned_total + len(planned),
                    hits_total + hits,
                    extra_total + extra,
                )
                images += 1
    return {**summarize(correct), "box_hit_rate": hits_total / planned_total, "extra_per_image": extra_total / images}


def own_plans(policy, records, indices, args, reasoning: str = "plan") -> dict:
    detector = WorldDetector()
    correct: dict[str, list[bool]] = defaultdict(list)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # plans, parsed, semantic, both
    boxes = square = 0
    drawn = {"layout_kept": [0, 0], "layout_broken": [0, 0]}  # right plans: [plans, images right]
    for start in range(0, len(records), args.batch):
        chunk = list(range(start, min(start + args.batch, len(records))))
        candidates = policy.generate(
            [records[i]["prompt"] for i in chunk],
            n=args.images_per_prompt,
            seed=args.seed,
            settings=SamplingSettings(cfg_scale=args.cfg_scales[0], temperature=args.temperatures[0]),
            indices=[indices[i] for i in chunk],
            think=reasoning != "none",
            reasoning="plan" if reasoning == "none" else reasoning,
        )
        for k, i in enumerate(chunk):
            for c in candidates[k * args.images_per_prompt : (k + 1) * args.images_per_prompt]:
                row = counts[records[i]["tag"]]
                row[0] += 1
                correct[records[i]["tag"]].append(judge_image(records[i], c.image, detector).correct)
                if reasoning != "plan":
                    continue
                try:
                    plan = parse_plan(c.plan)
                except PlanError:
                    continue
                check = check_plan(plan, records[i])
                right = check.semantic and check.spatial is not False
                row[1] += 1
                row[2] += check.semantic
                row[3] += right
                if right:
                    tally = drawn["layout_kept" if layout_rules(plan)[0] == 1 else "layout_broken"]
                    tally[0] += 1
                    tally[1] += correct[records[i]["tag"]][-1]
                for o in plan.objects:
                    x0, y0, x1, y1 = (round(v) for v in o.pixel_box(CANVAS))
                    boxes += 1
                    square += (x1 - x0) == (y1 - y0)
    plans = {
        tag: {"parse": p / n, "semantic": s / n, "semantic_spatial": b / n}
        for tag, (n, p, s, b) in sorted(counts.items())
    }
    right_plans_drawn = {k: {"plans": n, "images_right": r / max(1, n)} for k, (n, r) in drawn.items()}
    return {
        **summarize(correct),
        "plans": plans,
        "square_boxes": square / max(1, boxes),
        "right_plans": right_plans_drawn,
    }


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sft", help="sft, grpo, base or a checkpoint folder")
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--prompts", type=int, default=80, help="prompts taken evenly across the split")
    parser.add_argument("--images-per-prompt", type=int, default=4)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[None], help="image-token temperatures")
    parser.add_argument("--cfg-scales", type=float, nargs="+", default=[None])
    parser.add_argument(
        "--reasoning", nargs="*", default=["plan"], help="own reasoning to score: plan, rationale, none (no thinking)"
    )
    parser.add_argument("--skip-given", action="store_true", help="only the model's own reasoning")
    parser.add_argument("--batch", type=int, default=4, help="prompts sampled together")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (the policy runs in float32)")
    parser.add_argument("--out", default="plan_following.json")
    args = parser.parse_args()
    policy = Policy.load(
        SHIPPED_MODELS.get(args.model, args.model), Runtime.create(args.device, "float32", args.threads)
    )
    split = load_split(args.split)
    step = max(1, len(split) // args.prompts)
    indices = list(range(0, len(split), step))[: args.prompts]
    records = [split[i] for i in indices]
    report = {
        "model": args.model,
        "split": args.split,
        "prompts": len(records),
        "images_per_prompt": args.images_per_prompt,
    }
    report["given_plans"] = []
    for temperature in [] if args.skip_given else args.temperatures:
        for cfg in args.cfg_scales:
            began = time.perf_counter()
            used = policy.resolve(SamplingSettings(cfg_scale=cfg, temperature=temperature), after_plan=True)
            result = given_plans(policy, records, indices, args, used)
            result.update(temperature=used.temperature, cfg_scale=used.cfg_scale, seconds=time.perf_counter() - began)
            report["given_plans"].append(result)
            print("  " + " ".join(f"{tag} {score:.3f}" for tag, score in result["tasks"].items()))
            print(
                f"given plans, T {used.temperature} CFG {used.cfg_scale}: six {fmt(result['geneval_six'])} "
                f"all {result['all_tasks']:.3f} "
                f"box hits {result['box_hit_rate']:.3f} extra/image {result['extra_per_image']:.2f}"
            )
    for reasoning in args.reasoning:
        began = time.perf_counter()
        own = own_plans(policy, records, indices, args, reasoning)
        used = policy.resolve(
            SamplingSettings(cfg_scale=args.cfg_scales[0], temperature=args.temperatures[0]), reasoning == "plan"
        )
        own.update(temperature=used.temperature, cfg_scale=used.cfg_scale)
        report[f"own_{reasoning}"] = {**own, "seconds": time.perf_counter() - began}
        print(
            f"own {reasoning}, T {used.temperature} CFG {used.cfg_scale}: six {fmt(own['geneval_six'])} "
            f"all {own['all_tasks']:.3f}"
        )
        print("  " + " ".join(f"{tag} {score:.3f}" for tag, score in own["tasks"].items()))
    if "own_plan" not in report:
        return _write(report, args.out)
    own = report["own_plan"]
    print(f"own plans: square boxes {own['square_boxes']:.3f}")
    for kind, row in own["right_plans"].items():
        print(f"  right plans, {kind.replace('_', ' ')}: {row['plans']}, drawn right {row['images_right']:.3f}")
    for tag, row in own["plans"].items():
        print(
            f"  {tag:14s} parse {row['parse']:.3f} semantic {row['semantic']:.3f} "
            f"+spatial {row['semantic_spatial']:.3f}"
        )
    _write(report, args.out)


def _write(report: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
