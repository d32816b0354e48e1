"""`thinkdraw world ...`: look at the shapes world, render ground truth, rebuild the splits."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import typer
from PIL import Image

from thinkdraw.cli.config import add_command, option
from thinkdraw.cli.progress import progress_bar
from thinkdraw.errors import ThinkdrawError
from thinkdraw.evaluator.geneval import write_prompt_folder
from thinkdraw.plan import draw_plan
from thinkdraw.viz import caption_grid
from thinkdraw.world.layout import random_layout, scatter, solve_layout
from thinkdraw.world.plans import plan_of_scene
from thinkdraw.world.prompts import TASKS
from thinkdraw.world.render import render_image
from thinkdraw.world.spec import COLORS
from thinkdraw.world.splits import SPLIT_NAMES, load_split, write_splits

app = typer.Typer(help="The shapes world: prompts, scenes, splits.", no_args_is_help=True)

LAYOUTS = ("truth", "shuffled", "random")


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ThinkdrawError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


def _pick(split: str, task: str | None) -> list[dict]:
    records = load_split(split)
    return [r for r in records if task is None or r["tag"] == task]


def scene_for(metadata: dict, layout: str, rng: random.Random):
    """truth: a scene the prompt's rules accept; shuffled: its objects placed anywhere;
    random: 1 to 6 random objects (the chance level)."""
    if layout == "truth":
        return solve_layout(metadata, rng)
    if layout == "random":
        return random_layout(rng, rng.randint(1, 6))
    return scatter(rng, [(o.shape, o.color) for o in solve_layout(metadata, rng)])


@dataclass
class WorldSampleConfig:
    """Render prompts with ground-truth scenes into one picture, prompts written under the images."""

    n: int = option(16, "how many prompts", short="-n")
    output: Path = option(Path("grid.png"), "where to write the PNG", short="-o")
    split: str = option("test", f"prompt split: {', '.join(SPLIT_NAMES)}")
    task: str | None = option(None, f"only this task: {', '.join(TASKS)}")
    seed: int = option(0, "random seed (which prompts, which layouts)")
    plans: bool = option(False, "draw each scene's plan (boxes on a blank canvas) beside it")
    columns: int = option(4, "images per row")

    def __post_init__(self):
        _check_choice(self.split, SPLIT_NAMES, "split")
        if self.task is not None:
            _check_choice(self.task, TASKS, "task")
        if not 1 <= self.n <= 1024:
            raise ThinkdrawError("-n must be between 1 and 1024")
        if self.columns < 1:
            raise ThinkdrawError("--columns must be at least 1")


def sample(config: WorldSampleConfig) -> None:
    rng = random.Random(config.seed)
    records = _pick(config.split, config.task)
    chosen = rng.sample(records, min(config.n, len(records)))
    images, captions = [], []
    for record in chosen:
        objects = solve_layout(record, rng)
        image = render_image(objects)
        if config.plans:
            plan_image = draw_plan(plan_of_scene(objects), size=image.height * 4, palette=COLORS)
            side = Image.new("RGB", (image.width * 8 + 4, image.height * 4), "white")
            side.paste(image.resize((image.width * 4, image.height * 4), Image.Resampling.NEAREST), (0, 0))
            side.paste(plan_image, (image.width * 4 + 4, 0))
            image = side
        images.append(image)
        captions.append(record["prompt"])
    config.output.parent.mkdir(parents=True, exist_ok=True)
    caption_grid(images, captions, columns=config.columns).save(config.output)
    typer.echo(f"wrote {len(images)} scenes to {config.output}")


@dataclass
class WorldRenderConfig:
    """Render a split's prompts as a GenEval folder (ground truth, or a chance-level baseline)."""

    outdir: Path = option(help="output folder (GenEval layout)", argument=True)
    split: str = option("test", f"prompt split: {', '.join(SPLIT_NAMES)}")
    layout: str = option(
        "truth",
        "truth: scenes the prompt's rules accept; shuffled: the right objects "
        "placed at random; random: 1-6 random objects (chance level)",
    )
    images_per_prompt: int = option(4, "images per prompt")
    seed: int = option(0, "random seed")

    def __post_init__(self):
        _check_choice(self.split, SPLIT_NAMES, "split")
        _check_choice(self.layout, LAYOUTS, "layout")
        if self.images_per_prompt < 1:
            raise ThinkdrawError("--images-per-prompt must be at least 1")


def render_split(config: WorldRenderConfig) -> None:
    records = load_split(config.split)
    with progress_bar("rendering", len(records)) as advance:
        for index, record in enumerate(records):
            rng = random.Random(f"{config.seed}:{index}")
            scenes = [scene_for(record, config.layout, rng) for _ in range(config.images_per_prompt)]
            write_prompt_folder(config.outdir, index, record, [render_image(s) for s in scenes])
            advance(1)
    typer.echo(f"wrote {len(records)} prompts x {config.images_per_prompt} images to {config.outdir}")


@dataclass
class WorldSplitsConfig:
    """Rebuild the train / val / test prompt splits (the shipped files are this command's output)."""

    outdir: Path = option(help="folder to write train.jsonl, val.jsonl, test.jsonl and manifest.json", argument=True)


def splits(config: WorldSplitsConfig) -> None:
    manifest = write_splits(config.outdir)
    for name, info in manifest["splits"].items():
        typer.echo(f"{name}: {info['prompts']} prompts, sha256 {info['sha256'][:12]}")


@dataclass
class WorldVocabConfig:
    """List the words the world model reads (prompts and plans)."""


def vocab(config: WorldVocabConfig) -> None:
    from thinkdraw.world.model import world_words

    words = [w for w in world_words() if not w.isdigit()]
    typer.echo(" ".join(words))
    typer.echo(f"({len(words)} words, plus the numbers 0-1000 and punctuation for plan boxes)")


@dataclass
class WorldRolloutsConfig:
    """Draw the policy's samples (plan, then image) for a split's prompts and store them, to train judges on."""

    out: Path = option(help="rollout folder (resumable: parts already there are kept)", argument=True)
    model: str = option("sft", "shipped world model (sft, grpo, base) or a checkpoint folder")
    split: str = option("train", f"prompt split: {', '.join(SPLIT_NAMES)}")
    prompts: int = option(1000, "the split's first this many prompts")
    per_prompt: int = option(2, "samples per prompt")
    batch_size: int = option(32, "rows sampled together (and images per stored part)")
    seed: int = option(0, "random seed")
    threads: int = option(2, "CPU threads for torch (0: torch's default)")

    def __post_init__(self):
        _check_choice(self.split, SPLIT_NAMES, "split")
        if min(self.prompts, self.per_prompt, self.batch_size) < 1:
            raise ThinkdrawError("--prompts, --per-prompt and --batch-size must be at least 1")


def rollouts(config: WorldRolloutsConfig) -> None:
    from thinkdraw.cli.generate_cmds import resolve_model
    from thinkdraw.policy.model import Policy
    from thinkdraw.runtime import Runtime
    from thinkdraw.world.judge_data import draw_rollouts

    Runtime.create("cpu", "float32", config.threads)
    policy = Policy.load(resolve_model(config.model))
    draw_rollouts(
        policy, config.split, config.prompts, config.out, config.per_prompt, config.seed, config.batch_size, typer.echo
    )
    typer.echo(f"rollouts in {config.out}")


add_command(app, "sample", WorldSampleConfig, sample)
add_command(app, "vocab", WorldVocabConfig, vocab)
add_command(app, "render", WorldRenderConfig, render_split)
add_command(app, "splits", WorldSplitsConfig, splits)
add_command(app, "rollouts", WorldRolloutsConfig, rollouts)
