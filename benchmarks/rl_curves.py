"""Curves of GRPO and DPO runs from their log.jsonl, side by side in one PNG, and their figures as JSON.

Panels: the training reward (GRPO: the batch's mean reward; DPO: each round's mean ranked score), smoothed over
`--window` updates; the held-back prompts' reward against their exact score (`--held-out-every`: where the two
part, the policy learns its reward's blind spots); plan-token and image-token entropy; KL to the reference
(GRPO with --kl-beta) or DPO's margin.

    python benchmarks/rl_curves.py /work/grpo/geneval /work/grpo/binary --out docs/bench/rl_curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_log(run: Path) -> list[dict]:
    path = run / "log.jsonl"
    if not path.is_file():
        raise SystemExit(f"{run}: no log.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def updates(log: list[dict]) -> list[dict]:
    """One record per optimizer update (the last logged, should a resumed run have logged it twice)."""
    by_step = {r["step"]: r for r in log if "lr" in r}
    return [by_step[s] for s in sorted(by_step)]


def smooth(values: list[float], window: int) -> list[float]:
    out = []
    for i in range(len(values)):
        part = values[max(0, i - window + 1) : i + 1]
        out.append(sum(part) / len(part))
    return out


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    picked = [(r["step"], r[key]) for r in rows if key in r and r[key] == r[key]]  # NaN != NaN
    return [s for s, _ in picked], [v for _, v in picked]


def summary(name: str, log: list[dict]) -> dict:
    rows = updates(log)
    out = {"run": name, "updates": len(rows), "minutes": max((r.get("minutes", 0.0) for r in log), default=0.0)}
    for key in ("held_reward", "held_exact"):
        steps, values = series(rows, key)
        if values:
            out[key] = {"first": values[0], "last": values[-1], "steps": [steps[0], steps[-1]]}
    steps, values = series([r for r in log if "sampled" in r], "rank_mean")
    if values:
        out["rank_mean_by_round"] = values
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (each with a log.jsonl)")
    parser.add_argument("--names", nargs="*", help="legend names, one per run [default: the folders' names]")
    parser.add_argument("--window", type=int, default=10, help="updates the training reward is averaged over")
    parser.add_argument("--out", type=Path, default=Path("rl_curves.png"))
    args = parser.parse_args()
    names = args.names or [run.name for run in args.runs]
    if len(names) != len(args.runs):
        raise SystemExit(f"{len(names)} names for {len(args.runs)} runs")
    logs = {name: read_log(run) for name, run in zip(names, args.runs, strict=True)}
    figure, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    for name, log in logs.items():
        rows = updates(log)
        steps, values = series(rows, "reward_mean")
        if values:
            axes[0].plot(steps, smooth(values, args.window), label=f"{name} (batch reward)")
        steps, values = series([r for r in log if "sampled" in r], "rank_mean")
        if values:
            axes[0].plot(steps, values, "o-", label=f"{name} (round's ranked score)")
        for key, style in (("held_reward", "o-"), ("held_exact", "s--")):
            steps, values = series(rows, key)
            if values:
                axes[1].plot(steps, values, style, label=f"{name}: {key.removeprefix('held_')}")
        for key, style in (("entropy_text", "-"), ("entropy_image", "--")):
            steps, values = series(rows, key)
            if values:
                axes[2].plot(steps, values, style, label=f"{name}: {key.removeprefix('entropy_')}")
        for key in ("kl", "margin"):
            steps, values = series(rows, key)
            if values and any(values):
                axes[3].plot(steps, values, label=f"{name}: {key}")
    titles = (
        f"training reward (mean of {args.window} updates)",
        "held-back prompts: reward vs exact score",
        "entropy (nats per token)",
        "KL to the reference / DPO margin",
    )
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:  # say why a panel is empty rather than leave a bare frame
            ax.text(0.5, 0.5, "not logged by these runs", ha="center", va="center", transform=ax.transAxes)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    report = [summary(name, log) for name, log in logs.items()]
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    for r in report:
        print(json.dumps(r))
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
