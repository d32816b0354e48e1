"""The benchmark folders `thinkdraw generate --outdir` writes: each image where its evaluator reads it, named by
the evaluator's own helpers.

    geneval        DIR/00000/samples/0000.png, metadata.jsonl and plans.json beside   (geneval.write_prompt_folder)
    t2i-compbench  DIR/samples/{prompt}_{index:06d}.png, the index (question_id) running over all images: prompt k's
                   image j is k x images-per-prompt + j                                      (t2icompbench.sample_path)
    dpg            DIR/{item_id}.png, the prompt's pictures in one grid, where the scorer crops them
                                                                                   (dpg.image_path, dpg.grid_of)

The flat layouts have no folder per prompt, and the official scorers list every file of samples/ (T2I-CompBench's
BLIP_vqa.py, which reads a number off each name) or of DIR (DPG-Bench's, which skips a file it cannot score) as an
image, so their plans go to one DIR/plans.jsonl: a line per prompt (its record, its image files, its plans, the
verifier's choices), appended once its images are written; when a prompt is drawn again, its last line counts.
A prompt is done when its images are there and its plans written: a rerun skips it.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Protocol

from PIL import Image

from thinkdraw.errors import MetadataError
from thinkdraw.evaluator import dpg, t2icompbench
from thinkdraw.evaluator.geneval import prompt_folder, read_jsonl, write_prompt_folder

BENCHMARKS = ("geneval", "t2i-compbench", "dpg")
MAX_NAME_BYTES = 255  # the longest file name the usual file systems take
PLANS = "plans.jsonl"


class Layout(Protocol):
    """A benchmark folder's prompts, and where a prompt's images are written."""

    records: list[dict]  # each with its "prompt"

    def done(self, index: int) -> bool: ...

    def save(self, index: int, images: list[Image.Image], plans: list[str | None], picks: list | None) -> None: ...


def open_layout(benchmark: str, outdir: Path, metadata: Path | None, category: str, images_per_prompt: int) -> Layout:
    """The benchmark's folder at OUTDIR, its prompts from METADATA or else (t2i-compbench, dpg) the shipped ones."""
    if benchmark == "t2i-compbench":
        return CompBenchLayout(outdir, metadata or t2icompbench.prompt_file(category), images_per_prompt)
    if benchmark == "dpg":
        return DPGLayout(outdir, metadata or dpg.PROMPTS, images_per_prompt)
    return GenevalLayout(outdir, metadata, images_per_prompt)


class GenevalLayout:
    """DIR/00000/ per metadata record: metadata.jsonl, samples/0000.png ..., plans.json (and verifier.json)."""

    def __init__(self, outdir: Path, metadata: Path, images_per_prompt: int):
        self.outdir, self.images_per_prompt = outdir, images_per_prompt
        self.records = read_jsonl(metadata)
        if not self.records:
            raise MetadataError(f"{metadata}: no records")

    def done(self, index: int) -> bool:
        folder = prompt_folder(self.outdir, index)
        images = list((folder / "samples").glob("*.png"))
        return (folder / "plans.json").is_file() and len(images) == self.images_per_prompt

    def save(self, index: int, images: list[Image.Image], plans: list[str | None], picks: list | None) -> None:
        folder = write_prompt_folder(self.outdir, index, self.records[index], images)
        (folder / "plans.json").write_text(json.dumps(plans, indent=1) + "\n")
        if picks is not None:
            (folder / "verifier.json").write_text(json.dumps(picks, indent=1) + "\n")


class FlatLayout(ABC):
    """A layout without a folder per prompt: a prompt's images in `files(index)`, its plans a line of
    DIR/plans.jsonl. Subclasses say where the files are and what is written in them."""

    def __init__(self, outdir: Path, records: list[dict], images_per_prompt: int):
        self.outdir, self.records, self.images_per_prompt = outdir, records, images_per_prompt
        self.logged = _read_plans(outdir / PLANS)  # image files -> the plans of their last line

    @abstractmethod
    def files(self, index: int) -> list[Path]:
        """Where prompt `index`'s images go, in the order they are written."""

    def written(self, images: list[Image.Image]) -> list[Image.Image]:
        """The images as their files hold them (one each, unless a subclass says otherwise)."""
        return images

    def done(self, index: int) -> bool:
        files = self.files(index)
        plans = self.logged.get(self._key(files))
        return plans is not None and len(plans) == self.images_per_prompt and all(f.is_file() for f in files)

    def save(self, index: int, images: list[Image.Image], plans: list[str | None], picks: list | None) -> None:
        files = self.files(index)
        files[0].parent.mkdir(parents=True, exist_ok=True)
        for path, image in zip(files, self.written(images), strict=True):
            image.save(path)
        line = {**self.records[index], "images": list(self._key(files)), "plans": plans}
        if picks is not None:
            line["verifier"] = picks
        with (self.outdir / PLANS).open("a") as f:  # after the images: a line means the prompt is done
            f.write(json.dumps(line) + "\n")
        self.logged[self._key(files)] = plans

    def _key(self, files: list[Path]) -> tuple[str, ...]:
        return tuple(str(f.relative_to(self.outdir)) for f in files)


class CompBenchLayout(FlatLayout):
    """T2I-CompBench's DIR/samples/{prompt}_{index:06d}.png, prompts from a prompt file (a prompt a line)."""

    def __init__(self, outdir: Path, prompt_file: Path, images_per_prompt: int):
        records = [{"prompt": prompt} for prompt in t2icompbench.read_prompt_file(prompt_file)]
        super().__init__(outdir, records, images_per_prompt)
        for index, record in enumerate(records):
            for question_id, path in self._numbered(index):
                named = t2icompbench.sample_of(path) == t2icompbench.SampleImage(path, record["prompt"], question_id)
                _check_name(prompt_file, f"the prompt {record['prompt']!r}", path, named)

    def _numbered(self, index: int) -> list[tuple[int, Path]]:
        n, prompt = self.images_per_prompt, self.records[index]["prompt"]
        return [(i, t2icompbench.sample_path(self.outdir, prompt, i)) for i in range(index * n, (index + 1) * n)]

    def files(self, index: int) -> list[Path]:
        return [path for _, path in self._numbered(index)]


class DPGLayout(FlatLayout):
    """DPG-Bench's DIR/{item_id}.png, one grid of the prompt's pictures, prompts from {item_id}.txt files."""

    def __init__(self, outdir: Path, prompts: Path, images_per_prompt: int):
        records = [{"item_id": item, "prompt": prompt} for item, prompt in dpg.read_prompts(prompts).items()]
        super().__init__(outdir, records, images_per_prompt)
        for index, record in enumerate(records):
            (path,) = self.files(index)
            _check_name(prompts, f"the item id {record['item_id']!r}", path, dpg.item_of(path) == record["item_id"])

    def files(self, index: int) -> list[Path]:
        return [dpg.image_path(self.outdir, self.records[index]["item_id"])]

    def written(self, images: list[Image.Image]) -> list[Image.Image]:
        return [dpg.grid_of(images)]


def _check_name(source: Path, what: str, path: Path, reads_back: bool) -> None:
    """MetadataError unless the evaluator reads the file name back as what it is of, and the name fits."""
    if not reads_back:
        raise MetadataError(f"{source}: {what} cannot name its image file ({path.name!r} reads back as another)")
    if len(path.name.encode()) > MAX_NAME_BYTES:
        raise MetadataError(f"{source}: {what} is too long to name its image file ({MAX_NAME_BYTES} bytes at most)")


def _read_plans(path: Path) -> dict[tuple[str, ...], list]:
    logged: dict[tuple[str, ...], list] = {}
    if not path.is_file():
        return logged
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by an interrupted run: its prompt is drawn again
        if isinstance(row, dict) and isinstance(row.get("images"), list) and isinstance(row.get("plans"), list):
            logged[tuple(row["images"])] = row["plans"]
    return logged
