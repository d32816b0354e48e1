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
from thinkdraw.evaluator.dpg import DPGSummary
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
from thinkdraw.evaluator.t2icompbench import SCORED as T2I_CATEGORIES
from thinkdraw.evaluator.t2icompbench import USES as T2I_USES
from thinkdraw.evaluator.t2icompbench import check_category
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


# -- T2I-CompBench ---------------------------------------------------------------------------------------------

T2I_OPTIONS = {  # the options each model kind uses
    "blip": ("blip_model", "blip_image_size"),
    "clip": ("clip_model",),
    "detector": ("detector", "detector_model"),
}


@dataclass
class EvalT2ICompBenchConfig:
    """Score one T2I-CompBench category in its official layout (DIR/samples/{prompt}_{index:06d}.png)."""

    folder: Path = option(help="the category's folder (its images in FOLDER/samples)", argument=True)
    category: str = option("", f"the category: {', '.join(T2I_CATEGORIES)}")
    outfile: Path | None = option(None, "per-image results, JSON lines [default: FOLDER/results_CATEGORY.jsonl]")
    partial: bool = option(False, "score the prompts that have images (by default a prompt without one is an error)")
    blip_model: str = option(registry.BLIP_VQA_MODEL, "color, shape, texture, complex: BLIP-VQA, hub id or folder")
    blip_image_size: int = option(480, "BLIP-VQA's input size (the official 480; 0: the checkpoint's own)")
    clip_model: str = option(registry.CLIP_SIMILARITY_MODEL, "non_spatial, complex: the CLIP, hub id or folder")
    detector: str = option(
        "mask2former", f"spatial, numeracy, complex: the detector, {', '.join(DETECTORS)} (official: UniDet)"
    )
    detector_model: str = option(registry.MASK2FORMER_MODEL, "--detector mask2former: hub id or local folder")
    batch_size: int = option(32, "images per batch (the official BLIP batch)")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")

    def __post_init__(self):
        check_category(self.category)
        for kind, names in T2I_OPTIONS.items():
            if kind not in T2I_USES[self.category]:
                reject_ignored(self, names, f"by --category {self.category} (it asks no {kind} model)")
        if self.detector not in DETECTORS:
            raise ThinkdrawError(f"unknown detector {self.detector!r}; choose one of {', '.join(DETECTORS)}")
        if self.detector in WORLD_DETECTORS:
            reject_ignored(self, ("detector_model",), f"by --detector {self.detector} (it runs no model)")
            if T2I_USES[self.category] == ("detector",):
                reject_ignored(self, ("device",), f"by --category {self.category} with --detector {self.detector}")
        if self.blip_image_size < 0 or self.batch_size < 1:
            raise ThinkdrawError("--blip-image-size must be >= 0 and --batch-size >= 1")
        check_runtime(self.device, 0)


def t2i_compbench(config: EvalT2ICompBenchConfig) -> None:
    from thinkdraw.evaluator import t2icompbench as t2i

    samples = t2i.read_samples(config.folder, config.category, config.partial)  # before minutes of model loading
    uses = T2I_USES[config.category]
    device = Runtime.create(config.device, "float32").device if set(uses) != {"detector"} else None
    models = {}
    if "blip" in uses:
        models["vqa"] = t2i.BlipVQA.load(config.blip_model, device, config.blip_image_size or None)
    if "clip" in uses:
        models["clip"] = t2i.ClipSimilarity.load(config.clip_model, device)
    if "detector" in uses:
        if config.detector in WORLD_DETECTORS:
            models["detector"] = WORLD_DETECTORS[config.detector]()
        else:
            from thinkdraw.evaluator.mask2former import Mask2FormerDetector

            device = device or Runtime.create(config.device, "float32").device
            models["detector"] = Mask2FormerDetector.load(config.detector_model, None, device=device)
    start = time.perf_counter()
    with progress_bar("scoring", len(samples)) as advance:
        run = t2i.evaluate_samples
        results = run(samples, config.category, batch_size=config.batch_size, advance=advance, **models)
    elapsed = time.perf_counter() - start
    outfile = config.outfile or config.folder / f"results_{config.category}.jsonl"
    t2i.write_results(results, outfile)
    console = Console()
    table = Table(title=f"T2I-CompBench {config.category}")
    for column in ("metric", "score", "images"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    if config.category == "complex":
        for part in ("blip", "spatial", "clip"):
            mean = sum(r["details"][part] for r in results) / len(results)
            table.add_row(f"  {part}", f"{mean:.4f}", str(len(results)))
    metric = {"non_spatial": "CLIP", "spatial": "UniDet rule", "numeracy": "UniDet rule", "complex": "3-in-1"}
    table.add_row(metric.get(config.category, "BLIP-VQA"), f"{t2i.mean_score(results):.4f}", str(len(results)))
    console.print(table)
    console.print(f"{len(results)} images in {elapsed:.1f} s; results in {outfile}")


add_command(app, "t2i-compbench", EvalT2ICompBenchConfig, t2i_compbench)


# -- DPG-Bench -------------------------------------------------------------------------------------------------


@dataclass
class EvalDPGConfig:
    """Score DPG-Bench images (DIR/{item_id}.png, a 2x2 grid each) by a judge's yes/no answers."""

    folder: Path = option(help="the folder of images", argument=True)
    questions: Path | None = option(
        None, "DPG-Bench's question file, dpg_bench.csv of TencentQQGYLab/ELLA (not shipped with thinkdraw)"
    )
    judge: str = option("world", "the VQA: world (the shipped world judge), a local folder, a hub id or a url")
    pic_num: int = option(4, "pictures per image, read from its 2x2 grid in the official order (1 to 4)")
    resolution: int = option(0, "one picture's side in pixels (0: half the image's width, or all of it for 1)")
    partial: bool = option(False, "score the prompts that have images (by default a prompt without one is an error)")
    outfile: Path | None = option(None, "per-image results, JSON lines [default: FOLDER/dpg_results.jsonl]")
    device: str = option("auto", "a local judge: auto, cpu, cuda or cuda:N")

    def __post_init__(self):
        if self.questions is None:
            raise ThinkdrawError(
                "--questions is required: DPG-Bench's question file (dpg_bench/dpg_bench.csv of TencentQQGYLab/ELLA) "
                "is not shipped with thinkdraw"
            )
        if not 1 <= self.pic_num <= 4 or self.resolution < 0:
            raise ThinkdrawError("--pic-num must be 1 to 4 and --resolution >= 0")
        check_runtime(self.device, 0)


class JudgeVQA:
    """DPG-Bench's free-form questions put to a thinkdraw chat judge: the image, the question and "Answer yes or
    no."; P(yes) from the first answer token's log-probs of yes and no, as ChatJudge.yes reads them (the Judge
    protocol's yes() asks only thinkdraw's own questions, so the turn goes to the judge's chat backend)."""

    def __init__(self, judge):
        self.backend = judge.backend

    def yes(self, image, questions):
        import math

        from thinkdraw.judges.base import JudgeError, yes_probability
        from thinkdraw.judges.chat import Turn, answer_logprob
        from thinkdraw.judges.prompts import YES_NO

        answers = self.backend.complete([Turn(f"{q} {YES_NO}", image) for q in questions], max_tokens=1)
        found = []
        for answer in answers:
            yes_lp, no_lp = answer_logprob(answer.first_logprobs, "yes"), answer_logprob(answer.first_logprobs, "no")
            if math.isfinite(yes_lp) or math.isfinite(no_lp):
                found.append(yes_probability(yes_lp, no_lp))
                continue
            word = answer.text.strip().lower().rstrip(".")
            if word not in ("yes", "no"):
                raise JudgeError(f"the judge answered {answer.text[:40]!r}, not yes or no")
            found.append(1.0 if word == "yes" else 0.0)
        return found


def print_dpg(summary: DPGSummary, console: Console) -> None:
    table = Table(title="DPG-Bench")
    table.add_column("category")
    table.add_column("score", justify="right")
    for name, value in summary.l1.items():
        table.add_row(name, f"{value:.2f}")
    table.add_row("DPG-Bench score", f"{summary.score:.2f}", style="bold")
    console.print(table)


def dpg(config: EvalDPGConfig) -> None:
    from thinkdraw.evaluator import dpg as bench
    from thinkdraw.judges.load import load_judge
    from thinkdraw.world.registry import chat_judge

    questions = bench.read_questions(config.questions)
    images = bench.read_images(config.folder, list(questions), config.partial)  # before loading the judge
    device = Runtime.create(config.device, "float32").device
    vqa = JudgeVQA(load_judge(chat_judge(config.judge), device=device))
    start = time.perf_counter()
    with progress_bar("scoring", len(images)) as advance:
        results = bench.evaluate_images(images, questions, vqa, config.pic_num, config.resolution or None, advance)
    elapsed = time.perf_counter() - start
    outfile = config.outfile or config.folder / "dpg_results.jsonl"
    write_results(results, outfile)
    summary = bench.summarize(results, questions)
    console = Console()
    print_dpg(summary, console)
    left_out = f"; {summary.failed} left out (the judge could not answer)" if summary.failed else ""
    console.print(f"{summary.scored} images in {elapsed:.1f} s{left_out}; results in {outfile}")


add_command(app, "dpg", EvalDPGConfig, dpg)
