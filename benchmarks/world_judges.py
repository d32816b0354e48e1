"""How well does a world judge answer, against the exact detector's labels, on rollouts it never saw?

Labels are made as for training (thinkdraw.world.judge_data.judge_examples) from held-out rollouts (a split the
judge's rollouts did not come from: `thinkdraw world rollouts --split val`). Per question:
- yes/no questions: accuracy of P(yes) >= 0.5 against the label, the share labelled yes, and the accuracy of
  always answering the majority label (the bar a judge must clear);
- score: exact, and within 1 point;
- ground: the grounded box at IoU >= 0.5 with the detector's (or both say none);
- feedback: the sentence exactly right; describe: the list of objects and boxes exactly right;
and judgments per second (the judge's batches of 32, on this machine's threads). Any judge: a chat judge, or the
rule judge over the learned detector (world-rules).

    python benchmarks/world_judges.py thinkdraw/assets/judge --rollouts /work/rollouts/val --out judges.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from pathlib import Path

import torch

from thinkdraw.judges.base import JudgeError, parse_box, parse_feedback
from thinkdraw.judges.load import resolve_judge
from thinkdraw.policy.model import Policy
from thinkdraw.rewards import iou
from thinkdraw.world.judge_data import judge_examples, read_rollouts
from thinkdraw.world.registry import SHIPPED_JUDGES, SHIPPED_MODELS

YES_NO = ("outcome", "reflect", "process", "potential", "clarity", "semantic", "spatial")


def grade(question: str, label: str, answer) -> bool:
    if question in YES_NO:
        return (answer >= 0.5) == (label == "yes")
    if question == "score":
        return answer == float(label)
    if question == "ground":
        want = parse_box(label)
        return (answer is None and want is None) or (None not in (answer, want) and iou(answer, want) >= 0.5)
    if question == "describe":
        return answer == label
    return answer == parse_feedback(label)


UNREADABLE = object()  # an answer the judge gave that cannot be read (ground's None means "not there")


def ask_all(judge, ask: str, examples: list) -> list:
    """The judge's answers to the examples' question; UNREADABLE where an answer cannot be read."""

    def answer(part):
        queries = [e.query for e in part]
        if ask in YES_NO:
            return judge.yes(queries, ask)
        if ask == "score":
            return judge.score(queries)
        if ask == "ground":
            return judge.ground(queries, [e.phrase for e in part])
        if ask == "describe":
            return judge.describe(queries)
        return judge.feedback(queries)

    try:
        return answer(examples)
    except JudgeError:
        pass
    found = []
    for e in examples:
        try:
            found += answer([e])
        except JudgeError:
            found.append(UNREADABLE)
    return found


def evaluate(judge, examples: list, batch: int = 32, echo=print) -> dict:
    """Per question: accuracy against the labels (and the majority bar, for yes/no), judgments per second."""
    by_ask = defaultdict(list)
    for e in examples:
        by_ask[e.ask].append(e)
    report = {}
    for ask, rows in sorted(by_ask.items()):
        if ask == "describe" and not hasattr(judge, "describe"):
            continue  # only chat judges are taught to describe
        began = time.perf_counter()
        answers = [a for start in range(0, len(rows), batch) for a in ask_all(judge, ask, rows[start : start + batch])]
        seconds = time.perf_counter() - began
        unreadable = [a is UNREADABLE for a in answers]
        graded = [not bad and grade(ask, e.answer, a) for e, a, bad in zip(rows, answers, unreadable, strict=True)]
        entry = {
            "examples": len(rows),
            "accuracy": sum(graded) / len(rows),
            "unreadable": sum(unreadable) / len(rows),
            "judgments_per_second": len(rows) / seconds,
        }
        if ask in YES_NO:
            yes = sum(e.answer == "yes" for e in rows) / len(rows)
            entry |= {"labelled_yes": yes, "majority_accuracy": max(yes, 1 - yes)}
        if ask == "score":
            close = [a is not UNREADABLE and abs(a - float(e.answer)) <= 1 for e, a in zip(rows, answers, strict=True)]
            entry["within_1"] = sum(close) / len(rows)
        report[ask] = entry
        echo(f"{ask:10s} " + " ".join(f"{k}={v:.3f}" for k, v in entry.items() if isinstance(v, float)))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("judge", help="world, world-rules, a judge folder (VLMChat), or a server url")
    parser.add_argument("--rollouts", required=True, help="held-out rollout folder")
    parser.add_argument("--model", default="sft", help="the policy whose VQ decodes the rollouts")
    parser.add_argument("--images", type=int, default=0, help="use only this many rollout images (0: all)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="world_judges.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    policy = Policy.load(SHIPPED_MODELS.get(args.model, args.model))
    drawn = read_rollouts(Path(args.rollouts))
    drawn = drawn[: args.images] if args.images else drawn
    examples = judge_examples(policy, drawn, random.Random(0))
    report = {"judge": args.judge, "rollouts": args.rollouts, "images": len(drawn)}
    report["questions"] = evaluate(resolve_judge(args.judge, SHIPPED_JUDGES), examples, args.batch)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
