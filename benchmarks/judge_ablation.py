"""Which world judge learns to see: short runs of judge variants on one set of labelled examples, side by side,
each scored against the exact detector's labels on held-out rollouts (world_judges.py's grading).

    python benchmarks/judge_ablation.py --rollouts /work/data/train --scenes 3000 --val /work/data/val \
        --minutes 12 --steps 6000 --out /work/judge_ablation --variants wide wide-describe

Every variant trains on the schedule of --steps (warm-up, cosine) and stops after --minutes, so the variants
are compared at the same point of the same schedule, and the winner's run goes on to --steps with
`thinkdraw train judge --rollouts ... --scenes ... --steps ... --out OUT/VARIANT --resume` (the same labelled
examples: the same config gives the same ones). Writes OUT/ablation.json.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import replace
from pathlib import Path

import torch
from world_judges import evaluate

from thinkdraw.configs import TrainJudgeConfig
from thinkdraw.judges.chat import ChatJudge
from thinkdraw.policy.model import Policy
from thinkdraw.trainers.judge import train_judge
from thinkdraw.world.judge_data import judge_examples, labelled_examples, new_world_judge, read_rollouts
from thinkdraw.world.registry import ENVIRONMENT, SHIPPED_MODELS

VARIANTS = {
    "small": {"vision_hidden": 64, "vision_layers": 2, "describe": False},  # the first shipped judge's shape
    "wide": {"vision_hidden": 128, "vision_layers": 4, "describe": False},
    "wide-describe": {"vision_hidden": 128, "vision_layers": 4, "describe": True},
    "wider-describe": {"vision_hidden": 192, "vision_layers": 4, "hidden": 192, "describe": True},
    # one question only: every example of the batch teaches the outcome judge (a specialist, as PARM's are)
    "outcome-only": {"vision_hidden": 64, "vision_layers": 2, "describe": False, "asks": ["outcome"]},
    "wide-outcome-only": {"vision_hidden": 128, "vision_layers": 4, "describe": False, "asks": ["outcome"]},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=Path, nargs="+", required=True, help="training rollout folders")
    parser.add_argument("--scenes", type=int, default=3000, help="rendered scenes added (half spoilt)")
    parser.add_argument("--val", type=Path, required=True, help="held-out rollout folder (another split)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--minutes", type=float, default=12.0, help="training minutes per variant")
    parser.add_argument("--steps", type=int, default=6000, help="the schedule's length (warm-up, cosine)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("judge_ablation"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    policy = Policy.load(SHIPPED_MODELS["sft"])
    base = TrainJudgeConfig(
        rollouts=args.rollouts,
        scenes=args.scenes,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        max_minutes=args.minutes,
        save_every=args.steps,
        threads=args.threads,
        device="cpu",
        describe=True,
    )
    examples = labelled_examples(base, policy)  # with descriptions; the variants without leave them out
    val = judge_examples(policy, read_rollouts(args.val), random.Random(0))
    report = {"rollouts": [str(r) for r in args.rollouts], "scenes": args.scenes, "val": str(args.val)}
    report |= {"minutes": args.minutes, "steps": args.steps, "variants": {}}
    for name in args.variants:
        config = replace(base, out=args.out / name, **VARIANTS[name])
        rows = [e for e in examples if learns(config, e.ask)]
        print(f"== {name}: {VARIANTS[name]}, {len(rows)} examples")
        chat = new_world_judge(config, examples)
        chat = train_judge(chat, [(e.turn, e.answer) for e in rows], config, {"environment": ENVIRONMENT})
        log = [json.loads(line) for line in (config.out / "log.jsonl").read_text().splitlines()]
        steps = [r for r in log if "step" in r]
        report["variants"][name] = {
            "settings": VARIANTS[name],
            "parameters": sum(p.numel() for p in chat.model.parameters()),
            "steps": steps[-1]["step"] + 1 if steps else 0,
            "answer_ce": steps[-1].get("answer_ce") if steps else None,
            "questions": evaluate(ChatJudge(chat), [e for e in val if learns(config, e.ask)]),
        }
        (args.out / "ablation.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out / 'ablation.json'}")


def learns(config: TrainJudgeConfig, ask: str) -> bool:
    """Whether a variant learns (and is scored on) this question."""
    return (config.describe or ask != "describe") and (not config.asks or ask in config.asks)


if __name__ == "__main__":
    main()
