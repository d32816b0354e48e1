"""`thinkdraw generate`: think, then draw, on the shipped world model or any Janus checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from PIL import Image

from thinkdraw.cli.progress import progress_bar
from thinkdraw.configs import GenerateConfig
from thinkdraw.evaluator.geneval import write_prompt_folder
from thinkdraw.plan import PlanError, draw_plan, parse_plan
from thinkdraw.viz import caption_grid
from thinkdraw.world.splits import read_jsonl

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SHIPPED = {"base": ASSETS / "base", "sft": ASSETS / "sft"}


def resolve_model(name: str) -> str | Path:
    """A shipped world model by name (base, sft), a local folder, or a hub id."""
    return SHIPPED.get(name, name)


def _picture(candidate) -> Image.Image:
    """The image, and beside it the plan's boxes (when it has a readable plan)."""
    image = candidate.image.resize((256, 256), Image.Resampling.NEAREST)
    if candidate.plan is None:
        return image
    side = Image.new("RGB", (516, 256), "white")
    side.paste(image, (0, 0))
    try:
        side.paste(draw_plan(parse_plan(candidate.plan)), (260, 0))
    except PlanError:
        pass  # an unreadable plan is printed as written; there are no boxes to draw
    return side


def generate(config: GenerateConfig) -> None:
    import torch

    from thinkdraw.policy.model import Policy

    torch.set_num_threads(config.threads)
    policy = Policy.load(resolve_model(config.model))
    if config.metadata is None:
        candidates = policy.generate(
            [config.prompt], think=config.think, n=config.n, seed=config.seed, settings=config.settings()
        )
        for i, c in enumerate(candidates):
            typer.echo(f"[{i}] plan: {c.plan}" if config.think else f"[{i}] (no plan)")
        captions = [c.plan or c.prompt for c in candidates]
        config.output.parent.mkdir(parents=True, exist_ok=True)
        caption_grid([_picture(c) for c in candidates], captions, columns=2, cell=256).save(config.output)
        typer.echo(f"wrote {config.output}")
        return
    records = read_jsonl(config.metadata)
    todo = [i for i, _ in enumerate(records) if not _done(config.outdir, i, config.images_per_prompt)]
    per_batch = max(1, config.batch_size // config.images_per_prompt)
    with progress_bar("generating", len(todo)) as advance:
        for start in range(0, len(todo), per_batch):
            chunk = todo[start : start + per_batch]
            candidates = policy.generate(
                [records[i]["prompt"] for i in chunk],
                think=config.think,
                n=config.images_per_prompt,
                seed=config.seed,
                settings=config.settings(),
                indices=chunk,
            )
            for k, index in enumerate(chunk):
                mine = candidates[k * config.images_per_prompt : (k + 1) * config.images_per_prompt]
                folder = write_prompt_folder(config.outdir, index, records[index], [c.image for c in mine])
                (folder / "plans.json").write_text(json.dumps([c.plan for c in mine], indent=1) + "\n")
            advance(len(chunk))
    typer.echo(f"wrote {len(records)} prompts x {config.images_per_prompt} images to {config.outdir}")


def _done(outdir: Path, index: int, images: int) -> bool:
    """A prompt folder already complete (so an interrupted run picks up where it stopped)."""
    folder = outdir / f"{index:05d}"
    return (folder / "plans.json").is_file() and len(list((folder / "samples").glob("*.png"))) == images
