"""The fixed, versioned train / val / test prompt splits of the shapes world.

The shipped JSONL files are exactly what `build_splits()` writes; a test regenerates them
and compares, so code and data cannot drift apart silently. Bump VERSION when the recipe
changes (and retrain what depends on it).

The four small GenEval tasks are closed sets (six single objects, thirty ordered pairs...),
so val and test hold all of them and train sees them too, as a real model sees GenEval's
templates. Position, color_attr, complex and indirect prompts are sampled; val and test
never share one of these prompts, and train never holds a complex or indirect prompt
of val or test.
"""

from __future__ import annotations

import hashlib
import json
import random
from importlib import resources
from pathlib import Path

from thinkdraw.errors import MetadataError
from thinkdraw.evaluator.geneval import read_jsonl
from thinkdraw.world.prompts import TASKS, all_prompts, generate

VERSION = "world-v1"
SPLIT_NAMES = ("train", "val", "test")
SAMPLED = {  # prompts per sampled task
    "test": {"position": 60, "color_attr": 60, "complex": 120, "indirect": 120},
    "val": {"position": 30, "color_attr": 30, "complex": 60, "indirect": 60},
}
TRAIN_SIZE = 10_000
TRAIN_MIX = {
    "single_object": 0.05,
    "two_object": 0.10,
    "counting": 0.10,
    "colors": 0.10,
    "position": 0.15,
    "color_attr": 0.10,
    "complex": 0.25,
    "indirect": 0.15,
}
HELD_OUT_TASKS = ("complex", "indirect")
_SEEDS = {"test": 1001, "val": 2002, "train": 3003}


def _unique(task: str, n: int, rng: random.Random, taken: set[str]) -> list[dict]:
    out: list[dict] = []
    while len(out) < n:
        record = generate(task, rng)
        if record["prompt"] not in taken:
            taken.add(record["prompt"])
            out.append(record)
    return out


def build_splits() -> dict[str, list[dict]]:
    splits: dict[str, list[dict]] = {}
    taken: set[str] = set()  # sampled prompts already in an evaluation split
    for name in ("test", "val"):
        rng = random.Random(_SEEDS[name])
        records: list[dict] = []
        for task in TASKS:
            fixed = all_prompts(task)
            records += fixed if fixed is not None else _unique(task, SAMPLED[name][task], rng, taken)
        splits[name] = records
    rng = random.Random(_SEEDS["train"])
    held_out = {r["prompt"] for name in ("test", "val") for r in splits[name] if r["tag"] in HELD_OUT_TASKS}
    train = []
    tasks, weights = list(TRAIN_MIX), list(TRAIN_MIX.values())
    while len(train) < TRAIN_SIZE:
        record = generate(rng.choices(tasks, weights)[0], rng)
        if record["prompt"] not in held_out:
            train.append(record)
    splits["train"] = train
    return splits


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def write_splits(directory: Path) -> dict:
    """Write <split>.jsonl and manifest.json; returns the manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"version": VERSION, "splits": {}}
    for name, records in build_splits().items():
        text = _jsonl(records)
        (directory / f"{name}.jsonl").write_text(text)
        counts: dict[str, int] = {}
        for r in records:
            counts[r["tag"]] = counts.get(r["tag"], 0) + 1
        manifest["splits"][name] = {
            "prompts": len(records),
            "per_task": counts,
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
        }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def shipped_dir() -> Path:
    return Path(str(resources.files("thinkdraw.world") / "splits"))


def load_split(name: str) -> list[dict]:
    """The shipped split `name` (train, val or test) as a list of metadata dicts."""
    if name not in SPLIT_NAMES:
        raise MetadataError(f"unknown split {name!r}; choose one of {', '.join(SPLIT_NAMES)}")
    return read_jsonl(shipped_dir() / f"{name}.jsonl")
