"""Test-time verification on the world's test split: GenEval score against image tokens generated.

Every prompt's 20 candidates are drawn once (stored and resumable, as `thinkdraw world rollouts`), and every
verifier at every N is scored on them: best-of-N takes the first N; PRM and PARM are replayed on the first N
(thinkdraw.verifiers.replay: their checks see exactly the prefixes a pruning run would have drawn, and the
image tokens they would have spent are counted). The judge's answers are cached by (question, prompt, image),
so one partial image is judged once whatever N asks for it. The exact detector scores the pick (it is the
evaluator; the verifiers never see it).

Rows: none (one sample: the mean over all candidates, the expected score of N=1), bon, prm, parm (and parm@BAR for
each other --potential bar: how much PARM prunes, and what that costs, as the bar rises), and oracle
(a pick that is right whenever any of the N is: the ceiling); with --rounds, parm++ at the largest N, run live
(it draws again after the judge's feedback; the policy must have learned second tries). Per row and N: GenEval's
six tasks, all tasks, complex, indirect, and mean image tokens per prompt. Writes JSON and a plot (score vs tokens).

    python benchmarks/verifiers.py --judge world --per-task 12 --cache /work/verify/test --out docs/bench/verifiers.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from thinkdraw.evaluator.geneval import GENEVAL_TASKS
from thinkdraw.evaluator.rules import judge_image
from thinkdraw.judges.load import resolve_judge
from thinkdraw.policy.model import Policy
from thinkdraw.verifiers.settings import VerifierSettings
from thinkdraw.verifiers.verify import replay, verify
from thinkdraw.world.detector import WorldDetector
from thinkdraw.world.judge_data import draw_rollouts, read_rollouts
from thinkdraw.world.registry import SHIPPED_JUDGES, SHIPPED_MODELS
from thinkdraw.world.splits import load_split

NS = (1, 2, 4, 8, 16, 20)


@dataclass(frozen=True)
class Stored:
    """A candidate drawn earlier: what a verifier looks at."""

    prompt: str
    image_tokens: torch.Tensor  # [N]
    image: Image.Image
    plan: str | None
    drawn: int | None = None


class CachedJudge:
    """A judge whose yes/no answers are remembered by (question, prompt, plan, progress, image bytes)."""

    def __init__(self, judge):
        self.judge, self.memo, self.asked, self.seconds = judge, {}, 0, 0.0

    @staticmethod
    def key(question, q):
        pixels = hashlib.sha1(q.image.tobytes()).hexdigest() if q.image is not None else None
        return (question, q.prompt, q.plan, round(q.progress, 4), pixels)

    def yes(self, queries, question="outcome"):
        todo = [q for q in queries if self.key(question, q) not in self.memo]
        if todo:
            began = time.perf_counter()
            answers = self.judge.yes(todo, question)
            self.seconds += time.perf_counter() - began
            self.asked += len(todo)
            self.memo.update({self.key(question, q): a for q, a in zip(todo, answers, strict=True)})
        return [self.memo[self.key(question, q)] for q in queries]

    def feedback(self, queries):
        began = time.perf_counter()
        said = self.judge.feedback(queries)
        self.seconds += time.perf_counter() - began
        self.asked += len(queries)
        return said


def pick_records(split: str, per_task: int, tasks: list[str] | None = None) -> list[int]:
    """The first `per_task` prompts of every task (of `tasks` only, when given), in split order."""
    taken, chosen = defaultdict(int), []
    for i, record in enumerate(load_split(split)):
        if taken[record["tag"]] < per_task and (tasks is None or record["tag"] in tasks):
            taken[record["tag"]] += 1
            chosen.append(i)
    return chosen


def summary(correct: dict[str, list[float]], tokens: list[float]) -> dict:
    tasks = {task: sum(v) / len(v) for task, v in sorted(correct.items())}
    six = [tasks[t] for t in GENEVAL_TASKS if t in tasks]
    return {
        "geneval_six": sum(six) / len(six) if six else None,
        "all_tasks": sum(tasks.values()) / len(tasks),
        "complex": tasks.get("complex"),
        "indirect": tasks.get("indirect"),
        "tasks": tasks,
        "image_tokens": sum(tokens) / len(tokens),
    }


def headline(row: dict) -> str:
    shown = {
        k: "n/a" if row[k] is None else f"{row[k]:.3f}" for k in ("geneval_six", "all_tasks", "complex", "indirect")
    }
    return " ".join(f"{k}={v}" for k, v in shown.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judge", default="world", help="world, a judge folder, or a server url")
    parser.add_argument("--model", default="sft")
    parser.add_argument("--split", default="test")
    parser.add_argument("--per-task", type=int, default=12, help="prompts per task")
    parser.add_argument("--tasks", nargs="+", default=None, help="these tasks only (default: every task)")
    parser.add_argument("--n", type=int, default=20, help="candidates drawn per prompt (the largest N)")
    parser.add_argument("--checks", type=int, default=8, help="prm/parm partial-image checks")
    parser.add_argument("--cache", required=True, help="folder for the drawn candidates (resumable)")
    parser.add_argument("--batch", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="verifiers.json")
    parser.add_argument("--plot", default=None, help="PNG (default: --out with .png)")
    default = VerifierSettings()
    parser.add_argument(
        "--potential",
        type=float,
        nargs="+",
        default=[default.potential],
        help="parm rows at these potential bars (a clear path whose P(yes) is below stops); parm@BAR for the others",
    )
    parser.add_argument("--rounds", type=int, default=0, help="parm++ at the largest N, live, with this many rounds")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    policy = Policy.load(SHIPPED_MODELS.get(args.model, args.model))
    indices = pick_records(args.split, args.per_task, args.tasks)
    began = time.perf_counter()
    draw_rollouts(policy, args.split, indices, Path(args.cache), args.n, seed=0, batch=args.batch)
    drawn = read_rollouts(Path(args.cache))
    draw_seconds = time.perf_counter() - began
    images = policy.decode(torch.stack([d.tokens for d in drawn]))
    groups = [drawn[i : i + args.n] for i in range(0, len(drawn), args.n)]
    stored = [
        [Stored(d.record["prompt"], d.tokens, images[g * args.n + j], d.plan) for j, d in enumerate(group)]
        for g, group in enumerate(groups)
    ]
    detector = WorldDetector()
    right = [
        [judge_image(d.record, im.image, detector).correct for d, im in zip(g, s, strict=True)]
        for g, s in zip(groups, stored, strict=True)
    ]
    tags = [g[0].record["tag"] for g in groups]
    judge = CachedJudge(resolve_judge(args.judge, SHIPPED_JUDGES))
    N_img = policy.num_image_tokens
    rows: dict[str, dict[int, dict]] = defaultdict(dict)
    by_task = lambda values: {t: [v for v, tag in zip(values, tags, strict=True) if tag == t] for t in set(tags)}  # noqa: E731
    rows["none"][1] = summary(by_task([sum(r) / len(r) for r in right]), [N_img] * len(groups))
    for n in [n for n in NS if n <= args.n]:
        rows["oracle"][n] = summary(by_task([float(any(r[:n])) for r in right]), [n * N_img] * len(groups))
        variants = [("bon", "bon", default.potential), ("prm", "prm", default.potential)]
        variants += [("parm" if t == default.potential else f"parm@{t:g}", "parm", t) for t in args.potential]
        for name, kind, potential in variants:
            settings = VerifierSettings(candidates=n, checks=args.checks, potential=potential)
            picks = replay(kind, policy, judge, [c for s in stored for c in s[:n]], settings)
            correct = [float(r[p.chosen]) for r, p in zip(right, picks, strict=True)]
            rows[name][n] = summary(by_task(correct), [p.image_tokens for p in picks])
            print(f"{name:9s} N={n:2d} {headline(rows[name][n])} tokens={rows[name][n]['image_tokens']:.0f}")
    if args.rounds:  # parm++ draws again after feedback: run live (its first round is PARM on the same candidates)
        settings = VerifierSettings(candidates=args.n, checks=args.checks, rounds=args.rounds)
        prompts = [g[0].record["prompt"] for g in groups]
        picks = verify("parm++", policy, judge, prompts, settings, seed=0, indices=indices)
        correct = [
            float(judge_image(g[0].record, p.candidates[p.chosen].image, detector).correct)
            for g, p in zip(groups, picks, strict=True)
        ]
        rows["parm++"][args.n] = summary(by_task(correct), [p.image_tokens for p in picks])
        rows["parm++"][args.n]["second_tries"] = sum(len(p.feedback) for p in picks)
        print(f"parm++    N={args.n:2d} {headline(rows['parm++'][args.n])}")
    report = {
        "model": args.model,
        "judge": args.judge,
        "split": args.split,
        "prompts": len(groups),
        "per_task": args.per_task,
        "tasks": args.tasks,
        "checks": args.checks,
        "draw_seconds": draw_seconds,
        "judgments": judge.asked,
        "judgments_per_second": judge.asked / judge.seconds if judge.seconds else None,
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    plot(rows, args.plot or str(Path(args.out).with_suffix(".png")))
    print(f"wrote {args.out}")


def plot(rows: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measure = "geneval_six" if rows["none"][1]["geneval_six"] is not None else "all_tasks"
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, points in rows.items():
        ns = sorted(points)
        ax.plot([points[n]["image_tokens"] for n in ns], [points[n][measure] for n in ns], "o-", label=kind)
    ax.set_xscale("log", base=2)
    ticks = [256 * 2**i for i in range(6)]  # N = 1, 2, 4, ... candidates of 256 image tokens
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("image tokens generated per prompt")
    ax.set_ylabel("GenEval's six tasks" if measure == "geneval_six" else "all tasks asked for")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
