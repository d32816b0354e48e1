"""`thinkdraw generate`: think, then draw, on the shipped world model or any Janus checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from PIL import Image

from thinkdraw.checkpoint import read_meta
from thinkdraw.cli.progress import progress_bar
from thinkdraw.configs import GenerateConfig
from thinkdraw.errors import MetadataError
from thinkdraw.evaluator.geneval import read_jsonl, write_prompt_folder
from thinkdraw.plan import Plan, PlanError, draw_plan, parse_plan
from thinkdraw.viz import caption_grid
from thinkdraw.world.plans import check_world_words
from thinkdraw.world.registry import ENVIRONMENT, SHIPPED_MODELS
from thinkdraw.world.spec import COLORS


def resolve_model(name: str) -> str | Path:
    """A shipped world model by name (base, sft), a local folder, or a hub id."""
    return SHIPPED_MODELS.get(name, name)


def is_world_model(path: str | Path) -> bool:
    """Whether a checkpoint says it was trained in the shapes world (its thinkdraw.json)."""
    meta = Path(path) / "thinkdraw.json"
    return meta.is_file() and read_meta(Path(path)).get("environment") == ENVIRONMENT


def read_plan(text: str, world: bool) -> Plan:
    """A given plan, parsed (PlanError for malformed text) and, for a world model, in world words."""
    plan = parse_plan(text)
    return check_world_words(plan) if world else plan


def _picture(candidate, palette: dict | None) -> Image.Image:
    """The image, and beside it the plan's boxes (when it has a readable plan)."""
    image = candidate.image.resize((256, 256), Image.Resampling.NEAREST)
    if candidate.plan is None:
        return image
    side = Image.new("RGB", (516, 256), "white")
    side.paste(image, (0, 0))
    try:
        side.paste(draw_plan(parse_plan(candidate.plan), palette=palette), (260, 0))
    except PlanError:
        pass  # an unreadable plan is printed as written; there are no boxes to draw
    return side


def load_policy(path: str | Path, runtime, world: bool):
    from thinkdraw.policy.model import Policy

    policy = Policy.load(path, runtime)
    if world and policy.format.name == "plain":
        policy.format.hint = "its words: `thinkdraw world vocab`"
    return policy


def generate(config: GenerateConfig) -> None:
    from thinkdraw.runtime import Runtime

    runtime = Runtime.create(config.device, config.dtype, config.threads)
    path = resolve_model(config.model)
    world = is_world_model(path)
    if config.metadata is None:
        plans = [read_plan(config.plan, world).text()] if config.plan is not None else None
        policy = load_policy(path, runtime, world)
        candidates = policy.generate(
            [config.prompt],
            think=config.think,
            n=config.n,
            seed=config.seed,
            settings=config.sampling,
            plans=plans,
            reasoning=config.reasoning,
        )
        for i, c in enumerate(candidates):
            typer.echo(f"[{i}] {c.reasoning}: {c.plan}" if config.think else f"[{i}] (no plan)")
        captions = [c.plan or c.prompt for c in candidates]
        config.output.parent.mkdir(parents=True, exist_ok=True)
        palette = COLORS if world else None
        caption_grid([_picture(c, palette) for c in candidates], captions, columns=2, cell=256).save(config.output)
        typer.echo(f"wrote {config.output}")
        return
    records = read_jsonl(config.metadata)
    given = [_given_plan(config.metadata, i, r, world) for i, r in enumerate(records)] if config.given_plans else None
    policy = load_policy(path, runtime, world)
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
                settings=config.sampling,
                indices=chunk,
                plans=[given[i] for i in chunk] if given is not None else None,
                reasoning=config.reasoning,
            )
            for k, index in enumerate(chunk):
                mine = candidates[k * config.images_per_prompt : (k + 1) * config.images_per_prompt]
                folder = write_prompt_folder(config.outdir, index, records[index], [c.image for c in mine])
                (folder / "plans.json").write_text(json.dumps([c.plan for c in mine], indent=1) + "\n")
            advance(len(chunk))
    typer.echo(f"wrote {len(records)} prompts x {config.images_per_prompt} images to {config.outdir}")


def _given_plan(path: Path, index: int, record: dict, world: bool) -> str:
    """A record's `plan` field, read and checked; errors name the line."""
    if not isinstance(record.get("plan"), str):
        raise MetadataError(f"{path}: line {index + 1} has no 'plan' text (--given-plans draws after it)")
    try:
        return read_plan(record["plan"], world).text()
    except PlanError as err:
        raise PlanError(f"{path}: line {index + 1}: {err}") from None


def _done(outdir: Path, index: int, images: int) -> bool:
    """A prompt folder already complete (so an interrupted run picks up where it stopped)."""
    folder = outdir / f"{index:05d}"
    return (folder / "plans.json").is_file() and len(list((folder / "samples").glob("*.png"))) == images
