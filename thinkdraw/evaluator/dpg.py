"""DPG-Bench's scoring (TencentQQGYLab/ELLA, dpg_bench/compute_dpg_bench.py) over any yes/no answerer.

Layout (the official one): one image per prompt, named by the prompt's id, holding a 2 x 2 grid of pictures
    DIR/{item_id}.png              ("COCOval2014000000010363.png"; prompts/{item_id}.txt is its prompt)
Per image and per picture of the grid (--pic-num of them, each --resolution pixels a side), every question of
the prompt is asked; a question counts 1 when answered yes, and 0 when any of its parent questions (the
`dependency` column; 0 means none) was answered no or zeroed before it, in the file's order. The picture scores
the mean over its questions, the image the mean over its pictures, DPG-Bench the mean over images x 100.
Category scores are the official ones: per question tuple category ("entity - whole"; L1 "entity"), the
answers of the image's last picture before the parent rule.

The 1,065 prompts ship with the package (data/dpgbench/prompts, with ELLA's Apache-2.0 LICENSE). The question
file (dpg_bench.csv: item_id, text, keywords, proposition_id, dependency, category_broad, category_detailed,
tuple, question_natural_language) was not among the files we were given: pass the official one.
The official VQA model is mPLUG-large; here any YesNoVQA answers (the CLI asks a thinkdraw judge, P(yes) from
its first answer token, yes when P(yes) >= 0.5). Differences: docs/benchmarks_differences.md.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from PIL import Image

from thinkdraw.errors import BenchmarkError, EvalFolderError, MetadataError, ThinkdrawError
from thinkdraw.evaluator.geneval import load_image

DPG_DATA = Path(__file__).resolve().parent / "data" / "dpgbench"
PROMPTS = DPG_DATA / "prompts"  # {item_id}.txt, one prompt each
COLUMNS = ("item_id", "proposition_id", "dependency", "tuple", "question_natural_language")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
YES = 0.5  # P(yes) at or above it is a yes (the official answer == 'yes')


def dpg_prompts() -> dict[str, str]:
    """DPG-Bench's 1,065 prompts by item id (prompts/{item_id}.txt), sorted by id."""
    return read_prompts(PROMPTS)


def read_prompts(path: Path) -> dict[str, str]:
    """Prompts by item id from a folder of {item_id}.txt files (as DPG-Bench's prompts/), sorted by id, or from
    one such file; each holds one prompt on one line. MetadataError when there is none, or a file holds more."""
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
    elif path.is_file():
        files = [path]
    else:
        raise MetadataError(f"{path}: no such file or folder")
    if not files:
        raise MetadataError(f"{path}: no prompts (expected {path}/{{item_id}}.txt, one prompt each)")
    prompts = {}
    for file in files:
        lines = [line.strip() for line in file.read_text().splitlines() if line.strip()]
        if len(lines) != 1:
            raise MetadataError(f"{file}: expected one prompt on one line, found {len(lines)} lines")
        prompts[file.stem] = lines[0]
    return prompts


@dataclass(frozen=True)
class Question:
    qid: int  # proposition_id
    text: str  # question_natural_language
    tuple: str  # "entity - whole (cabbage)"
    parents: tuple[int, ...]  # dependency, 0 (no parent) left out

    @property
    def category(self) -> str:
        """The official L2 category: the tuple before its '(' ("entity - whole")."""
        return self.tuple.split("(")[0].strip()

    @property
    def l1(self) -> str:
        return self.category.split("-")[0].strip()


def read_questions(path: Path) -> dict[str, list[Question]]:
    """The question file, grouped by item id in the file's order. Every row is kept (the official loop skips the
    first data row, see docs/benchmarks_differences.md); a parent must be a question of the same item."""
    if not path.is_file():
        raise BenchmarkError(f"{path}: no such question file")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise BenchmarkError(f"{path}: not DPG-Bench's question file (no column {', '.join(missing)})")
        items: dict[str, list[Question]] = {}
        for line, row in enumerate(reader, start=2):
            try:
                qid = int(row["proposition_id"])
                parents = tuple(int(d.strip()) for d in row["dependency"].split(","))
            except (ValueError, AttributeError):
                raise BenchmarkError(f"{path}:{line}: proposition_id and dependency must be integers") from None
            question = Question(qid, row["question_natural_language"], row["tuple"], tuple(p for p in parents if p))
            items.setdefault(row["item_id"], []).append(question)
    if not items:
        raise BenchmarkError(f"{path}: no questions")
    for item, questions in items.items():
        qids = [q.qid for q in questions]
        if len(set(qids)) != len(qids):
            raise BenchmarkError(f"{path}: item {item!r} lists a proposition_id twice")
        for q in questions:
            if unknown := [p for p in q.parents if p not in qids]:
                raise BenchmarkError(f"{path}: item {item!r} question {q.qid} depends on {unknown[0]}, not one of its")
    return items


class YesNoVQA(Protocol):
    """Answers free-form yes/no questions about one image: P(yes) per question, in order."""

    def yes(self, image: Image.Image, questions: Sequence[str]) -> list[float]: ...


def apply_parents(questions: Sequence[Question], answered_yes: dict[int, bool]) -> dict[int, float]:
    """The official rule: in the file's order, a question any of whose parents scores 0 (answered no, or zeroed
    before it) scores 0; the others score 1 for yes, 0 for no."""
    scores = {q.qid: float(answered_yes[q.qid]) for q in questions}
    for q in questions:
        if any(scores[p] == 0 for p in q.parents):
            scores[q.qid] = 0.0
    return scores


def grid_boxes(r: int, pic_num: int) -> list[tuple[int, int, int, int]]:
    """The official pictures of a grid, r x r each: at (0, 0), (r, 0), (0, r), (r, r), the first pic_num."""
    return [(0, 0, r, r), (r, 0, 2 * r, r), (0, r, r, 2 * r), (r, r, 2 * r, 2 * r)][:pic_num]


def grid_of(pictures: Sequence[Image.Image]) -> Image.Image:
    """Square pictures of one size in one image, each where `crops` reads it back (one picture: itself; three:
    the fourth place left white)."""
    if not 1 <= len(pictures) <= 4:
        raise BenchmarkError(f"{len(pictures)} pictures: DPG-Bench's grids hold 1 to 4")
    r = pictures[0].width
    if any(picture.size != (r, r) for picture in pictures):
        raise ValueError(f"grid pictures must be squares of one size, got {[p.size for p in pictures]}")
    boxes = grid_boxes(r, len(pictures))
    image = Image.new("RGB", (max(b[2] for b in boxes), max(b[3] for b in boxes)), "white")
    for picture, box in zip(pictures, boxes, strict=True):
        image.paste(picture.convert("RGB"), box[:2])
    return image


def crops(image: Image.Image, pic_num: int, resolution: int | None) -> list[Image.Image]:
    """The official crop boxes: (0, 0), (r, 0), (0, r), (r, r), each r x r, the first pic_num of them. Without a
    resolution: half the image's width for a grid (pic_num > 1), the whole image for one picture."""
    if not 1 <= pic_num <= 4:
        raise BenchmarkError(f"--pic-num {pic_num}: DPG-Bench's grids hold 1 to 4 pictures")
    r = resolution or (image.width // 2 if pic_num > 1 else None)
    if r is None:
        return [image]
    boxes = grid_boxes(r, pic_num)
    right, bottom = max(b[2] for b in boxes), max(b[3] for b in boxes)
    if image.width < right or image.height < bottom:
        raise BenchmarkError(
            f"a {image.width}x{image.height} image cannot hold {pic_num} pictures of {r} px (needs {right}x{bottom})"
        )
    return [image.crop(box) for box in boxes]


@dataclass(frozen=True)
class ImageScore:
    score: float | None  # the mean over its pictures; None when the answerer failed (left out, as officially)
    picture_scores: tuple[float, ...] = ()
    last_answers: dict[int, float] = field(default_factory=dict)  # the last picture's answers before the rule
    reason: str = ""


def score_image(
    image: Image.Image, questions: Sequence[Question], vqa: YesNoVQA, pic_num: int = 4, resolution: int | None = None
) -> ImageScore:
    pictures = crops(image, pic_num, resolution)
    picture_scores, answers = [], {}
    for picture in pictures:
        try:
            p_yes = vqa.yes(picture, [q.text for q in questions])
        except ThinkdrawError as error:  # an answer the judge could not give: the image is left out
            return ImageScore(None, reason=f"the VQA model could not answer: {error}")
        if len(p_yes) != len(questions):
            raise BenchmarkError(f"the VQA model gave {len(p_yes)} answers to {len(questions)} questions")
        answers = {q.qid: float(p >= YES) for q, p in zip(questions, p_yes, strict=True)}
        scores = apply_parents(questions, {qid: a == 1.0 for qid, a in answers.items()})
        picture_scores.append(math.fsum(scores.values()) / len(scores))
    return ImageScore(math.fsum(picture_scores) / len(picture_scores), tuple(picture_scores), answers)


def image_path(folder: Path, item: str) -> Path:
    """Where an item's image lies: FOLDER/{item_id}.png."""
    return folder / f"{item}.png"


def item_of(path: Path) -> str:
    """The item id an image is of, the official key: its name before the first '.'."""
    return path.name.split(".")[0]


def read_images(folder: Path, items: Sequence[str], partial: bool = False) -> dict[str, Path]:
    """item id -> its image (DIR/{item_id}.png, or .jpg). An image of no listed item, or (unless `partial`) an
    item without an image, is an error."""
    if not folder.is_dir():
        raise EvalFolderError(f"{folder}: no such folder")
    layout = f"DPG-Bench's layout is {folder}/{{item_id}}.png, one 2x2 grid per prompt"
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        key = item_of(path)
        if key in found:
            raise EvalFolderError(f"{path}: a second image for {key!r} ({found[key].name})")
        found[key] = path
    if not found:
        raise EvalFolderError(f"{folder}: no images ({layout})")
    known = set(items)
    if stray := [p for k, p in found.items() if k not in known]:
        raise EvalFolderError(f"{stray[0]}: not a DPG-Bench prompt id ({layout})")
    missing = [item for item in items if item not in found]
    if missing and not partial:
        raise EvalFolderError(
            f"{folder}: {len(missing)} of the {len(items)} prompts have no image (the first: {missing[0]}.png); "
            "--partial scores the others"
        )
    return {item: found[item] for item in items if item in found}


def evaluate_images(
    images: dict[str, Path],
    questions: dict[str, list[Question]],
    vqa: YesNoVQA,
    pic_num: int = 4,
    resolution: int | None = None,
    advance: Callable[[int], None] | None = None,
) -> list[dict]:
    """One result per image: its score (None when left out), its pictures' scores, the answers per question."""
    results = []
    for item, path in images.items():
        scored = score_image(load_image(path), questions[item], vqa, pic_num, resolution)
        results.append(
            {
                "filename": str(path),
                "item_id": item,
                "score": scored.score,
                "picture_scores": list(scored.picture_scores),
                "answers": {str(q.qid): scored.last_answers.get(q.qid) for q in questions[item]},
                "reason": scored.reason,
            }
        )
        if advance:
            advance(1)
    return results


@dataclass(frozen=True)
class DPGSummary:
    score: float  # x 100, over the images scored
    scored: int
    failed: int
    l1: dict[str, float]  # x 100
    l2: dict[str, float]


def summarize(results: Sequence[dict], questions: dict[str, list[Question]]) -> DPGSummary:
    scored = [r for r in results if r["score"] is not None]
    if not scored:
        reason = results[0]["reason"] if results else "no images"
        raise BenchmarkError(f"no image could be scored ({reason})")
    l1: dict[str, list[float]] = {}
    l2: dict[str, list[float]] = {}
    for r in scored:
        for q in questions[r["item_id"]]:
            l2.setdefault(q.category, []).append(r["answers"][str(q.qid)])
            l1.setdefault(q.l1, []).append(r["answers"][str(q.qid)])
    mean = lambda values: 100 * math.fsum(values) / len(values)  # noqa: E731
    return DPGSummary(
        mean([r["score"] for r in scored]),
        len(scored),
        len(results) - len(scored),
        {k: mean(v) for k, v in l1.items()},
        {k: mean(v) for k, v in sorted(l2.items())},
    )
