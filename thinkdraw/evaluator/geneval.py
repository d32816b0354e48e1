"""GenEval's folder layout and scoring, over any Detector.

Layout (the official one, so official tools read ours and ours read theirs):
    DIR/00000/metadata.jsonl      one line: the prompt's metadata
    DIR/00000/samples/0000.png    its images
Results: one JSON line per image in the official format (filename, tag, prompt, correct,
reason, metadata, details); the official summary script reads them unchanged.

The official benchmark ships with the package (data/geneval: evaluation_metadata.jsonl,
object_names.txt and their MIT LICENSE, copied unchanged from djghosh13/geneval):
`geneval_prompts()` gives its 553 prompts, `geneval_classes()` its 80 class names.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from thinkdraw.errors import EvalFolderError, ImageError, MetadataError
from thinkdraw.evaluator.detection import Detector
from thinkdraw.evaluator.plans import check_plan
from thinkdraw.evaluator.rules import judge_image, validate_metadata
from thinkdraw.plan import PlanError, parse_plan

GENEVAL_TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
GENEVAL_DATA = Path(__file__).resolve().parent / "data" / "geneval"


def geneval_classes() -> tuple[str, ...]:
    """GenEval's 80 class names (object_names.txt): COCO's things in COCO's label order, three renamed
    (computer mouse, tv remote, computer keyboard). The official scorer maps detector label i to line i."""
    return tuple(line.strip() for line in (GENEVAL_DATA / "object_names.txt").read_text().splitlines() if line.strip())


def geneval_prompts() -> list[dict]:
    """GenEval's 553 prompts, one metadata record each, in the official order (prompt folder i is record i)."""
    records = read_jsonl(GENEVAL_DATA / "evaluation_metadata.jsonl")
    classes = geneval_classes()
    return [validate_metadata(record, classes) for record in records]


@dataclass(frozen=True)
class PromptFolder:
    index: int
    metadata: dict
    images: list[Path]
    path: Path


def prompt_folder(root: Path, index: int) -> Path:
    """Record `index`'s folder: ROOT/00000 for the first."""
    return root / f"{index:05d}"


def write_prompt_folder(root: Path, index: int, metadata: dict, images: list[Image.Image]) -> Path:
    folder = prompt_folder(root, index)
    (folder / "samples").mkdir(parents=True, exist_ok=True)
    (folder / "metadata.jsonl").write_text(json.dumps(metadata) + "\n")
    for j, image in enumerate(images):
        image.save(folder / "samples" / f"{j:04d}.png")
    return folder


def read_prompt_folders(root: Path, classes: tuple[str, ...] | None = None) -> list[PromptFolder]:
    """Every numbered prompt folder under root, metadata validated; errors name the file."""
    if not root.is_dir():
        raise EvalFolderError(f"{root}: no such folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit())
    if not folders:
        raise EvalFolderError(f"{root}: no prompt folders (expected {root}/00000/metadata.jsonl and samples/)")
    out = []
    for folder in folders:
        meta_path = folder / "metadata.jsonl"
        if not meta_path.is_file():
            raise EvalFolderError(f"{meta_path}: missing")
        lines = [line for line in meta_path.read_text().splitlines() if line.strip()]
        if len(lines) != 1:
            raise MetadataError(f"{meta_path}: expected one JSON line, found {len(lines)}")
        try:
            metadata = validate_metadata(json.loads(lines[0]), classes)
        except json.JSONDecodeError as err:
            raise MetadataError(f"{meta_path}: not valid JSON ({err.msg})") from None
        except MetadataError as err:
            raise MetadataError(f"{meta_path}: {err}") from None
        if not (folder / "samples").is_dir():
            raise EvalFolderError(f"{folder}/samples: missing (expected the images as {folder}/samples/0000.png, ...)")
        images = sorted((folder / "samples").glob("*.png"))
        if not images:
            raise EvalFolderError(f"{folder}/samples: no PNG images")
        out.append(PromptFolder(int(folder.name), metadata, images, folder))
    return out


def load_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ImageError(f"{path}: cannot read image ({err.__class__.__name__})") from None


def evaluate_prompts(
    prompts: list[PromptFolder], detector: Detector, advance: Callable[[int], None] | None = None
) -> list[dict]:
    """One official-format result per image (read the folders with `read_prompt_folders`)."""
    results = []
    for prompt in prompts:
        for path in prompt.images:
            verdict = judge_image(prompt.metadata, load_image(path), detector)
            details = {label: [list(d.box) + [d.score] for d in dets] for label, dets in verdict.detections.items()}
            results.append(
                {
                    "filename": str(path),
                    "tag": prompt.metadata["tag"],
                    "prompt": prompt.metadata["prompt"],
                    "correct": verdict.correct,
                    "reason": verdict.reason,
                    "metadata": json.dumps(prompt.metadata),
                    "details": json.dumps(details),
                }
            )
            if advance:
                advance(1)
    return results


@dataclass(frozen=True)
class TaskScore:
    correct: int
    total: int

    @property
    def score(self) -> float:
        return self.correct / self.total


@dataclass(frozen=True)
class Summary:
    tasks: dict[str, TaskScore]

    @property
    def overall(self) -> float:
        """Mean of task scores over every task present (GenEval's 'avg. over tasks')."""
        return sum(t.score for t in self.tasks.values()) / len(self.tasks)

    @property
    def geneval_overall(self) -> float | None:
        """Mean over GenEval's six tasks, when all six are present."""
        if not all(t in self.tasks for t in GENEVAL_TASKS):
            return None
        return sum(self.tasks[t].score for t in GENEVAL_TASKS) / len(GENEVAL_TASKS)


def summarize(results: Iterable[dict]) -> Summary:
    tasks: dict[str, list[int]] = {}
    for r in results:
        counts = tasks.setdefault(r["tag"], [0, 0])
        counts[0] += bool(r["correct"])
        counts[1] += 1
    return Summary({tag: TaskScore(c, n) for tag, (c, n) in tasks.items()})


def write_results(results: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in results))


@dataclass(frozen=True)
class PlanScore:
    parsed: int  # plans that parse
    semantic: int  # ... and name the prompt's objects, colours and counts
    right: int  # ... and whose boxes also stand in the prompt's relations
    total: int


def score_plans(prompts: list[PromptFolder]) -> dict[str, PlanScore]:
    """The plans written beside the images (PROMPT/plans.json, from `thinkdraw generate --think`) checked
    against their prompts by `check_plan`, per task. Images drawn without a plan (null in plans.json, from
    --no-think) and folders without plans.json are left out; no plans at all gives {}."""
    counts: dict[str, list[int]] = {}
    for prompt in prompts:
        path = prompt.path / "plans.json"
        if not path.is_file():
            continue
        try:
            plans = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise EvalFolderError(f"{path}: not valid JSON ({err.msg})") from None
        if not isinstance(plans, list) or not all(p is None or isinstance(p, str) for p in plans):
            raise EvalFolderError(f"{path}: expected a list of plan texts (null where an image had no plan)")
        for text in plans:
            if text is None:
                continue
            row = counts.setdefault(prompt.metadata["tag"], [0, 0, 0, 0])
            row[3] += 1
            try:
                check = check_plan(parse_plan(text), prompt.metadata)
            except PlanError:
                continue
            row[0] += 1
            row[1] += check.semantic
            row[2] += check.semantic and check.spatial is not False
    return {tag: PlanScore(*row) for tag, row in counts.items()}


def read_jsonl(path: Path) -> list[dict]:
    """Metadata records from a JSONL file; a clear MetadataError names the bad line."""
    if not path.is_file():
        raise MetadataError(f"{path}: no such file")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(validate_metadata(json.loads(line)))
        except json.JSONDecodeError as err:
            raise MetadataError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        except MetadataError as err:
            raise MetadataError(f"{path}:{number}: {err}") from None
    return records
