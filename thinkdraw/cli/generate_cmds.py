"""`thinkdraw generate`: think, then draw, on the shipped world model or any Janus checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer
from PIL import Image

from thinkdraw.checkpoint import read_meta
from thinkdraw.cli.progress import progress_bar
from thinkdraw.configs import GenerateConfig
from thinkdraw.errors import MetadataError
from thinkdraw.evaluator.layouts import open_layout
from thinkdraw.plan import Plan, PlanError, draw_plan, parse_plan
from thinkdraw.viz import caption_grid
from thinkdraw.world.plans import check_world_words
from thinkdraw.world.registry import ENVIRONMENT, SHIPPED_MODELS
from thinkdraw.world.spec import COLORS


def resolve_model(name: str) -> str | Path:
    """A shipped world model by name (base, sft, grpo), a local folder, or a hub id."""
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

    n = config.images_per_prompt
    layout = None  # a benchmark's prompts, read (their file names checked) before the models load
    if config.prompt is None:
        layout = open_layout(config.benchmark, config.outdir, config.metadata, config.category, n)
    runtime = Runtime.create(config.device, config.dtype, config.threads)
    path = resolve_model(config.model)
    world = is_world_model(path)
    judge = None
    if config.verifier != "none":
        from thinkdraw.judges.load import resolve_judge
        from thinkdraw.world.registry import SHIPPED_JUDGES

        judge = resolve_judge(config.judge, SHIPPED_JUDGES, device=runtime.device)
    if config.prompt is not None and judge is not None:
        _verified_grid(config, load_policy(path, runtime, world), judge, COLORS if world else None)
        return
    if config.prompt is not None:
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
    records = layout.records
    given = [_given_plan(config.metadata, i, r, world) for i, r in enumerate(records)] if config.given_plans else None
    policy = load_policy(path, runtime, world)
    todo = [i for i in range(len(records)) if not layout.done(i)]
    per_image = config.verifying.candidates if judge is not None else 1
    per_batch = max(1, config.batch_size // (n * per_image))
    with progress_bar("generating", len(todo)) as advance:
        for start in range(0, len(todo), per_batch):
            chunk = todo[start : start + per_batch]
            plans = [given[i] for i in chunk] if given is not None else None
            drawn = _images_for(config, policy, judge, records, chunk, plans)
            for index, (mine, picks) in zip(chunk, drawn, strict=True):
                layout.save(index, [c.image for c in mine], [c.plan for c in mine], picks)
            advance(len(chunk))
    typer.echo(f"wrote {len(records)} prompts x {n} images to {config.outdir}")


def _given_plan(path: Path, index: int, record: dict, world: bool) -> str:
    """A record's `plan` field, read and checked; errors name the line."""
    if not isinstance(record.get("plan"), str):
        raise MetadataError(f"{path}: line {index + 1} has no 'plan' text (--given-plans draws after it)")
    try:
        return read_plan(record["plan"], world).text()
    except PlanError as err:
        raise PlanError(f"{path}: line {index + 1}: {err}") from None


def _images_for(config: GenerateConfig, policy, judge, records, chunk: list[int], plans) -> list[tuple[list, list]]:
    """Per prompt of the chunk: its images_per_prompt candidates, and (with a verifier) what the judge did
    for each image (the pick among its -N candidates, their scores, the image tokens spent)."""
    n = config.images_per_prompt
    prompts = [records[i]["prompt"] for i in chunk]
    if judge is None:
        candidates = policy.generate(
            prompts,
            think=config.think,
            n=n,
            seed=config.seed,
            settings=config.sampling,
            indices=chunk,
            plans=plans,
            reasoning=config.reasoning,
        )
        return [(candidates[k * n : (k + 1) * n], None) for k in range(len(chunk))]
    from thinkdraw.verifiers.verify import verify

    picks = verify(
        config.verifier,
        policy,
        judge,
        [p for p in prompts for _ in range(n)],  # each image is the pick of its own -N candidates
        config.verifying,
        config.sampling,
        config.seed,
        config.think,
        config.reasoning,
        indices=[i * n + j for i in chunk for j in range(n)],
    )
    out = []
    for k in range(len(chunk)):
        mine = picks[k * n : (k + 1) * n]
        about = [{"chosen": p.chosen, "scores": p.scores, "image_tokens": p.image_tokens} for p in mine]
        out.append(([p.candidates[p.chosen] for p in mine], about))
    return out


def _verified_grid(config: GenerateConfig, policy, judge, palette) -> None:
    """One prompt, -N candidates, the judge's pick marked; each cell captioned with its score or its stop."""
    from thinkdraw.verifiers.verify import verify

    (pick,) = verify(
        config.verifier,
        policy,
        judge,
        [config.prompt],
        config.verifying,
        config.sampling,
        config.seed,
        config.think,
        config.reasoning,
    )
    captions = []
    for i, (c, score) in enumerate(zip(pick.candidates, pick.scores, strict=True)):
        judged = f"stopped at token {c.drawn}" if score is None else f"P(yes) {score:.2f}"
        captions.append(f"{'PICK ' if i == pick.chosen else ''}{judged}: {c.plan or c.prompt}")
        typer.echo(f"[{i}] {judged}{'  <- pick' if i == pick.chosen else ''}  {c.reasoning}: {c.plan}")
    for event in pick.events:
        typer.echo(event)
    total = len(pick.candidates) * policy.num_image_tokens
    typer.echo(f"{config.verifier}: {pick.image_tokens} of {total} image tokens drawn; pick [{pick.chosen}]")
    config.output.parent.mkdir(parents=True, exist_ok=True)
    cells = [_picture(c, palette) for c in pick.candidates]
    caption_grid(cells, captions, columns=4, cell=256, marked={pick.chosen}).save(config.output)
    typer.echo(f"wrote {config.output}")
