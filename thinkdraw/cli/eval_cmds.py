"""`thinkdraw eval ...`: score a folder of generated images."""

from __future__ import annotations

import time
from dataclasses import astuple, dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from thinkdraw.cli.config import add_command, option
from thinkdraw.cli.progress import progress_bar
from thinkdraw.configs import check_runtime, reject_ignored
from thinkdraw.errors import ThinkdrawError
from thinkdraw.evaluator import registry
from thinkdraw.evaluator.geneval import (
    PlanScore,
    Summary,
    evaluate_prompts,
    geneval_classes,
    read_prompt_folders,
    score_plans,
    summarize,
    write_results,
)
from thinkdraw.runtime import Runtime
from thinkdraw.world.registry import DETECTORS as WORLD_DETECTORS

DETECTORS = (*WORLD_DETECTORS, *registry.DETECTORS)
MODEL_OPTIONS = ("detector_model", "clip_model", "device")  # what only a model-backed detector uses

app = typer.Typer(help="Evaluate generated images.", no_args_is_help=True)


@dataclass
class EvalGenevalConfig:
    """Score a folder in GenEval's layout (DIR/00000/metadata.jsonl, DIR/00000/samples/0000.png)."""

    folder: Path = option(help="the folder to score", argument=True)
    outfile: Path | None = option(None, "per-image results, official format [default: FOLDER/results.jsonl]")
    detector: str = option(
        "world", f"detector: {', '.join(DETECTORS)} (mask2former: GenEval's Mask2Former + CLIP on transformers)"
    )
    detector_model: str = option(
        registry.MASK2FORMER_MODEL, "--detector mask2former: a COCO instance Mask2Former, hub id or local folder"
    )
    clip_model: str = option(registry.CLIP_MODEL, "--detector mask2former: the CLIP naming colours, hub id or folder")
    device: str = option("auto", "--detector mask2former: auto, cpu, cuda or cuda:N")

    def __post_init__(self):
        if self.detector not in DETECTORS:
            raise ThinkdrawError(f"unknown detector {self.detector!r}; choose one of {', '.join(DETECTORS)}")
        if self.detector in WORLD_DETECTORS:
            reject_ignored(self, MODEL_OPTIONS, f"by --detector {self.detector} (it runs no model)")
        check_runtime(self.device, 0)


def print_summary(summary: Summary, console: Console) -> None:
    table = Table(title="GenEval rules")
    for column, justify in (("task", "left"), ("score", "right"), ("correct", "right")):
        table.add_column(column, justify=justify)
    for tag, task in summary.tasks.items():
        table.add_row(tag, f"{task.score:.4f}", f"{task.correct} / {task.total}")
    if summary.geneval_overall is not None:
        table.add_row("overall (GenEval's six)", f"{summary.geneval_overall:.4f}", "", style="bold")
    table.add_row("overall (all tasks)", f"{summary.overall:.4f}", "", style="bold")
    console.print(table)


def print_plan_scores(scores: dict[str, PlanScore], console: Console) -> None:
    table = Table(title="plans (check_plan against the prompt)")
    for column in ("task", "parse", "semantic", "semantic + spatial", "plans"):
        table.add_column(column, justify="left" if column == "task" else "right")
    every = PlanScore(*(sum(column) for column in zip(*map(astuple, scores.values()), strict=True)))
    for tag, s in [*scores.items(), ("all", every)]:
        table.add_row(tag, *(f"{n / s.total:.4f}" for n in (s.parsed, s.semantic, s.right)), str(s.total))
    console.print(table)


def geneval(config: EvalGenevalConfig) -> None:
    if config.detector in WORLD_DETECTORS:
        detector = WORLD_DETECTORS[config.detector]()
        prompts = read_prompt_folders(config.folder, detector.classes)
    else:
        # the folder is checked before minutes of model loading
        prompts = read_prompt_folders(config.folder, geneval_classes())
        from thinkdraw.evaluator.mask2former import Mask2FormerDetector

        device = Runtime.create(config.device, "float32").device
        detector = Mask2FormerDetector.load(config.detector_model, config.clip_model, device=device)
    total = sum(len(p.images) for p in prompts)
    start = time.perf_counter()
    with progress_bar("scoring", total) as advance:
        results = evaluate_prompts(prompts, detector, advance)
    elapsed = time.perf_counter() - start
    outfile = config.outfile or config.folder / "results.jsonl"
    write_results(results, outfile)
    console = Console()
    print_summary(summarize(results), console)
    plans = score_plans(prompts)
    if plans:
        print_plan_scores(plans, console)
    console.print(f"{total} images in {elapsed:.1f} s ({total / elapsed:.1f} images/s); results in {outfile}")


add_command(app, "geneval", EvalGenevalConfig, geneval)
