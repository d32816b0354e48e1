"""How much a policy's image tokens use its prompt (and plan): policies side by side.

Teacher-forced image cross-entropy (nats per token) and top-1 accuracy on the same seeded
world examples (val split, right plans), split by what the token is:
- `start`:    an object patch with background above and to the left: where an object begins,
              which only the prompt or plan can tell;
- `top row`:  the rest of an object's first row;
- `interior`: object patches below another object patch (mostly copied from the row above);
- `bg edge`:  background touching an object; `bg`: the rest of the background.
Each under three contexts: `right` (the example's own prompt and plan), `shuffled` (another
example's) and `dropped` (pads: the unconditional branch of CFG). A policy that draws what it
is asked has much lower `start` cross-entropy under `right` than under the other two.

With --think, a second table does the same for the plan's own tokens (teacher-forced, each
example's plan) by kind: colours the prompt names, other colours (free choices, or named
indirectly), shapes, box numbers, punctuation; under the example's own prompt and under
another example's. A plan that copies the prompt's objects has much lower `named colour`
and `shape` cross-entropy under its own prompt.

    python benchmarks/conditioning.py thinkdraw/assets/base                 # draw directly
    python benchmarks/conditioning.py thinkdraw/assets/sft OTHER_SFT --think  # prompt + plan first
"""

from __future__ import annotations

import argparse
import random

import torch
import torch.nn.functional as F

from thinkdraw.engine.sampling import sequence_logits
from thinkdraw.policy.model import Policy
from thinkdraw.policy.vq import encode_images
from thinkdraw.trainers.sft import unconditional
from thinkdraw.world.data import world_example
from thinkdraw.world.render import render_image
from thinkdraw.world.spec import COLORS, SHAPES
from thinkdraw.world.splits import load_split


def token_kinds(image_ids: torch.Tensor, blank: int, grid: int) -> dict[str, torch.Tensor]:
    """Masks [B, N] of the token kinds above."""
    obj = (image_ids != blank).view(-1, grid, grid)
    above_free = torch.ones_like(obj)
    above_free[:, 1:] = ~obj[:, :-1]
    left_free = torch.ones_like(obj)
    left_free[:, :, 1:] = ~obj[:, :, :-1]
    kinds = {
        "start": obj & above_free & left_free,
        "top row": obj & above_free & ~left_free,
        "interior": obj & ~above_free,
        "bg edge": ~obj & ~(above_free & left_free),
        "bg": ~obj & above_free & left_free,
    }
    return {name: mask.flatten(1) for name, mask in kinds.items()}


PLAN_KINDS = ("named colour", "other colour", "shape", "number", "punctuation")


def word_kind(word: str, prompt: str) -> str:
    if word in COLORS:
        return "named colour" if word in prompt.split() else "other colour"
    if word in SHAPES:
        return "shape"
    return "number" if word.isdigit() else "punctuation"


def plan_table(policy: Policy, examples) -> dict[str, dict[str, tuple[float, float]]]:
    """Plan-token CE (top-1) by word kind, under each example's own prompt and another's."""
    plans = [policy.plan_ids(e.plan) for e in examples]
    rows = [policy.encode(e.prompt, think=True) for e in examples]
    targets = torch.tensor([t for plan in plans for t in plan])
    pairs = zip(examples, plans, strict=True)
    kinds = [word_kind(policy.tokenizer.decode([t]).strip(), e.prompt) for e, plan in pairs for t in plan]
    image_ids = encode_images(policy.model.model.vqmodel, [render_image(e.objects) for e in examples])
    table = {}
    for how, context in (("own prompt", rows), ("other prompt", rows[1:] + rows[:1])):
        with torch.no_grad():
            text_logits, _ = sequence_logits(policy.model, context, plans, image_ids, policy.special)
        logits = torch.cat([t[: len(plan)] for t, plan in zip(text_logits, plans, strict=True)]).float()
        ce = F.cross_entropy(logits, targets, reduction="none")
        right = logits.argmax(-1) == targets
        table[how] = {}
        for kind in PLAN_KINDS:
            mask = torch.tensor([k == kind for k in kinds])
            table[how][kind] = (ce[mask].mean().item(), right[mask].float().mean().item())
    return table


def print_table(table: dict[str, dict[str, tuple[float, float]]]) -> None:
    kinds = list(next(iter(table.values())))
    print(f"{'context':13s}" + "".join(f"{k:>16s}" for k in kinds))
    for how, row in table.items():
        print(f"{how:13s}" + "".join(f"{ce:10.3f} ({acc:.2f})" for ce, acc in row.values()))


def contexts(policy: Policy, examples, think: bool, how: str) -> tuple[list[list[int]], list[list[int]]]:
    prompts = [e.prompt for e in examples]
    plans = [policy.plan_ids(e.plan) if think else [] for e in examples]
    rows = [policy.encode(p, think) for p in prompts]
    if how == "shuffled":
        rows, plans = rows[1:] + rows[:1], plans[1:] + plans[:1]
    elif how == "dropped":
        dropped = [unconditional(policy, r, p) for r, p in zip(rows, plans, strict=True)]
        rows, plans = [r for r, _ in dropped], [p for _, p in dropped]
    return rows, plans


def measure(policy: Policy, examples, think: bool) -> dict[str, dict[str, tuple[float, float]]]:
    image_ids = encode_images(policy.model.model.vqmodel, [render_image(e.objects) for e in examples])
    kinds = token_kinds(image_ids, policy.blank_token(), policy.model.model.vqmodel.config.num_patches)
    table = {}
    for how in ("right", "shuffled", "dropped"):
        rows, plans = contexts(policy, examples, think, how)
        with torch.no_grad():
            layout = policy.layout_of(plans)  # plan-guided positions, when the policy has them
            _, logits = sequence_logits(policy.model, rows, plans, image_ids, policy.special, layout=layout)
        ce = F.cross_entropy(logits.flatten(0, 1).float(), image_ids.flatten(), reduction="none").view(image_ids.shape)
        right = logits.argmax(-1) == image_ids
        table[how] = {name: (ce[m].mean().item(), right[m].float().mean().item()) for name, m in kinds.items()}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policies", nargs="+", help="policy checkpoint folders")
    parser.add_argument("--think", action="store_true", help="put the plan before the image (SFT policies)")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    records = load_split("val")
    examples = [world_example(rng.choice(records), rng, error_rate=0.0) for _ in range(args.examples)]

    print(f"{args.examples} val examples, {'prompt + plan' if args.think else 'prompt only'}; CE nats/token (top-1)")
    for path in args.policies:
        policy = Policy.load(path)
        print(f"\n{path}: image tokens")
        print_table(measure(policy, examples, args.think))
        if args.think:
            print(f"{path}: plan tokens")
            print_table(plan_table(policy, examples))


if __name__ == "__main__":
    main()
