"""Where a world policy's image tokens go wrong, teacher-forced: given a val example's prompt, its ground-truth plan
and the true image tokens before each position, how often is the model's most likely token the true one, and how
much cross-entropy does each kind of patch carry? Patches are split into empty ones (the VQ's blank token) and
object ones, and into those inside a planned box and outside all of them. Written as JSON.

    python benchmarks/token_accuracy.py --examples 64 --out docs/bench/token_accuracy.json
"""

from __future__ import annotations

import argparse
import json
import random

import torch
import torch.nn.functional as F

from thinkdraw.engine.sampling import sequence_logits
from thinkdraw.policy.model import Policy
from thinkdraw.policy.vq import encode_images
from thinkdraw.runtime import Runtime
from thinkdraw.world.data import WorldExamples
from thinkdraw.world.registry import SHIPPED_MODELS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(SHIPPED_MODELS["sft"]))
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="token_accuracy.json")
    args = parser.parse_args()
    policy = Policy.load(args.model, Runtime.create("cpu", "float32", args.threads))
    rng = random.Random(args.seed)
    source = WorldExamples("val", error_rate=0.0)
    examples = [source.example(rng, with_errors=False) for _ in range(args.examples)]
    ids = encode_images(policy.model.model.vqmodel, [e.image for e in examples])  # [B, N]
    contexts = [policy.encode(e.prompt, True, "plan") for e in examples]
    plans = [policy.plan_ids(e.reasoning) for e in examples]
    layout = policy.layout_of(plans)
    with torch.no_grad():
        _, logits = sequence_logits(policy.model, contexts, plans, ids, policy.special, layout=layout)
    ce = F.cross_entropy(logits.flatten(0, 1).float(), ids.flatten(), reduction="none").view_as(ids)
    right = logits.argmax(-1) == ids
    blank = ids == policy.blank_token()
    in_box = layout.mask.sum(-1) > 0
    parts = {"empty": blank, "object": ~blank, "in a planned box": in_box, "outside every box": ~in_box}
    report = {
        "model": args.model,
        "examples": args.examples,
        "images_all_right": right.all(-1).float().mean().item(),
        "patches": {
            name: {
                "share": mask.float().mean().item(),
                "argmax_right": right[mask].float().mean().item(),
                "cross_entropy": ce[mask].mean().item(),
                "share_of_cross_entropy": (ce[mask].sum() / ce.sum()).item(),
            }
            for name, mask in parts.items()
        },
    }
    for name, row in report["patches"].items():
        print(
            f"{name:18s} share {row['share']:.3f}  argmax right {row['argmax_right']:.4f}  "
            f"CE {row['cross_entropy']:.3f}  share of CE {row['share_of_cross_entropy']:.3f}"
        )
    print(f"images with every token right: {report['images_all_right']:.3f}")
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
