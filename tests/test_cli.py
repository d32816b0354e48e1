"""The command line: render ground truth, score it, and fail on bad input with one line, exit code 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from thinkdraw.cli.main import app
from thinkdraw.evaluator.geneval import write_prompt_folder
from thinkdraw.world.detector import WorldDetector
from thinkdraw.world.render import WorldObject, render_image
from thinkdraw.world.splits import load_split, shipped_dir

runner = CliRunner()
OFFICIAL_KEYS = ["filename", "tag", "prompt", "correct", "reason", "metadata", "details"]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def val_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("val")
    result = invoke("world", "render", folder, "--split", "val", "--images-per-prompt", "1")
    assert result.exit_code == 0, result.output
    assert "wrote 294 prompts x 1 images" in result.stdout
    return folder


def test_render_writes_geneval_layout(val_folder):
    records = load_split("val")
    folders = sorted(p.name for p in val_folder.iterdir() if p.is_dir())
    assert folders == [f"{i:05d}" for i in range(294)]
    for i in (0, 100, 293):
        assert json.loads((val_folder / f"{i:05d}" / "metadata.jsonl").read_text()) == records[i]
        assert [p.name for p in (val_folder / f"{i:05d}" / "samples").iterdir()] == ["0000.png"]
        with Image.open(val_folder / f"{i:05d}" / "samples" / "0000.png") as image:
            assert (image.size, image.mode) == ((64, 64), "RGB")


def test_eval_ground_truth_scores_one(val_folder):
    result = invoke("eval", "geneval", val_folder)
    assert result.exit_code == 0, result.output
    assert re.search(r"overall \(all tasks\)\W+1\.0000", result.stdout), result.stdout
    assert re.search(r"overall \(GenEval's six\)\W+1\.0000", result.stdout), result.stdout
    lines = (val_folder / "results.jsonl").read_text().splitlines()
    assert len(lines) == 294
    records = load_split("val")
    for i, line in enumerate(lines):
        row = json.loads(line)
        assert list(row) == OFFICIAL_KEYS
        assert row["correct"] is True and row["reason"] == ""
        assert row["filename"] == str(val_folder / f"{i:05d}" / "samples" / "0000.png")
        assert json.loads(row["metadata"]) == records[i]
        assert (row["tag"], row["prompt"]) == (records[i]["tag"], records[i]["prompt"])
        details = json.loads(row["details"])
        assert isinstance(details, dict)
        for boxes in details.values():
            assert all(len(b) == 5 and b[4] == 1.0 for b in boxes)  # x0, y0, x1, y1, score
        wanted = sum(c["count"] for c in records[i]["include"])
        assert sum(len(b) for b in details.values()) == wanted  # the ground truth has exactly the named objects


def test_eval_counts_failures_per_task(tmp_path):
    record = {
        "tag": "colors",
        "include": [{"class": "circle", "count": 1, "color": "red"}],
        "prompt": "a photo of a red circle",
    }
    right = render_image([WorldObject("circle", "red", 10, 10, 16)])
    wrong = render_image([WorldObject("circle", "blue", 10, 10, 16)])
    write_prompt_folder(tmp_path, 0, record, [right, wrong, right, right])
    outfile = tmp_path / "out" / "scores.jsonl"
    result = invoke("eval", "geneval", tmp_path, "--outfile", outfile)
    assert result.exit_code == 0, result.output
    assert re.search(r"colors\W+0\.7500\W+3 / 4", result.stdout), result.stdout
    assert "GenEval's six" not in result.stdout  # five of the six tasks are absent
    rows = [json.loads(line) for line in outfile.read_text().splitlines()]
    assert [r["correct"] for r in rows] == [True, False, True, True]
    assert rows[1]["reason"] == "expected red circle>=1, found 0 red; and 1 blue"
    assert json.loads(rows[1]["details"]) == {"circle": [[10, 10, 26, 26, 1.0]]}
    assert not (tmp_path / "results.jsonl").exists()


def test_eval_checks_the_plans_beside_the_images(tmp_path):
    record = {
        "tag": "position",
        "include": [{"class": "circle", "count": 1}, {"class": "square", "count": 1, "position": ["left of", 0]}],
        "prompt": "a photo of a square left of a circle",
    }
    image = render_image([WorldObject("square", "red", 4, 20, 16), WorldObject("circle", "blue", 40, 20, 16)])
    write_prompt_folder(tmp_path, 0, record, [image] * 5)
    plans = [
        "blue circle (625,313),(875,563); red square (63,313),(313,563)",  # right
        "blue circle (63,313),(313,563); red square (625,313),(875,563)",  # the square on the wrong side
        "blue circle (625,313),(875,563)",  # the square missing
        "blue circle (625,313),(875",  # does not parse
        None,  # drawn without a plan
    ]
    (tmp_path / "00000" / "plans.json").write_text(json.dumps(plans))
    result = invoke("eval", "geneval", tmp_path)
    assert result.exit_code == 0, result.output
    assert re.search(r"position\W+1\.0000\W+5 / 5", result.stdout), result.stdout
    assert re.search(r"position\W+0\.7500\W+0\.5000\W+0\.2500\W+4", result.stdout), result.stdout  # None: no plan
    (tmp_path / "00000" / "plans.json").write_text(json.dumps([None] * 5))
    assert "plans (check_plan" not in invoke("eval", "geneval", tmp_path).stdout  # --no-think: no plan table
    (tmp_path / "00000" / "plans.json").write_text("[")
    assert_one_line_error(invoke("eval", "geneval", tmp_path), "plans.json: not valid JSON")


def copy_prompt(src: Path, dst: Path, index: int = 0) -> Path:
    folder = dst / f"{index:05d}"
    (folder / "samples").mkdir(parents=True)
    (folder / "metadata.jsonl").write_text((src / "00000" / "metadata.jsonl").read_text())
    (folder / "samples" / "0000.png").write_bytes((src / "00000" / "samples" / "0000.png").read_bytes())
    return folder


def test_bad_json_metadata(val_folder, tmp_path):
    folder = copy_prompt(val_folder, tmp_path)
    (folder / "metadata.jsonl").write_text('{"tag": "single_object", \n')
    assert_one_line_error(invoke("eval", "geneval", tmp_path), "metadata.jsonl: not valid JSON")


def test_metadata_without_include(val_folder, tmp_path):
    folder = copy_prompt(val_folder, tmp_path)
    (folder / "metadata.jsonl").write_text(json.dumps({"tag": "single_object", "prompt": "a photo of a circle"}))
    assert_one_line_error(invoke("eval", "geneval", tmp_path), "metadata.jsonl", "'include'")


def test_metadata_with_unknown_class(val_folder, tmp_path):
    folder = copy_prompt(val_folder, tmp_path)
    record = {"tag": "single_object", "include": [{"class": "dog", "count": 1}], "prompt": "a photo of a dog"}
    (folder / "metadata.jsonl").write_text(json.dumps(record))
    assert_one_line_error(invoke("eval", "geneval", tmp_path), "class 'dog' is not one the detector knows")


def test_missing_folder(tmp_path):
    assert_one_line_error(invoke("eval", "geneval", tmp_path / "nope"), "no such folder")


def test_folder_without_prompts(tmp_path):
    assert_one_line_error(invoke("eval", "geneval", tmp_path), "no prompt folders")


def test_prompt_without_images(val_folder, tmp_path):
    folder = copy_prompt(val_folder, tmp_path)
    (folder / "samples" / "0000.png").unlink()
    assert_one_line_error(invoke("eval", "geneval", tmp_path), "samples: no PNG images")


def test_unreadable_png(val_folder, tmp_path):
    folder = copy_prompt(val_folder, tmp_path)
    (folder / "samples" / "0000.png").write_bytes(b"this is not a png at all")
    assert_one_line_error(invoke("eval", "geneval", tmp_path), "0000.png: cannot read image")
    assert not (tmp_path / "results.jsonl").exists()


def test_truncated_png(val_folder, tmp_path):
    folder = copy_prompt(val_folder, tmp_path)
    data = (folder / "samples" / "0000.png").read_bytes()
    (folder / "samples" / "0000.png").write_bytes(data[: len(data) // 2])  # the header opens, the pixels do not
    assert_one_line_error(invoke("eval", "geneval", tmp_path), "0000.png: cannot read image (OSError)")


def test_wrong_size_png(val_folder, tmp_path):
    folder = copy_prompt(val_folder, tmp_path)
    Image.new("RGB", (50, 70)).save(folder / "samples" / "0000.png")
    assert_one_line_error(invoke("eval", "geneval", tmp_path), "expected a 64x64 shapes-world image, got 50x70")


def test_unknown_detector(val_folder):
    assert_one_line_error(invoke("eval", "geneval", val_folder, "--detector", "mmdet"), "unknown detector 'mmdet'")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--split", "dev"], "unknown split 'dev'; choose one of train, val, test"),
        (["--layout", "perfect"], "unknown layout 'perfect'"),
        (["--images-per-prompt", "0"], "--images-per-prompt must be at least 1"),
    ],
)
def test_render_rejects_bad_options(tmp_path, args, fragment):
    assert_one_line_error(invoke("world", "render", tmp_path / "out", *args), fragment)
    assert not (tmp_path / "out").exists()


def test_process_exit_code_and_stderr(tmp_path):
    """The real entry point, not the test runner: exit code 2, one line on stderr, nothing on stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "thinkdraw", "eval", "geneval", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == f"error: {tmp_path / 'nope'}: no such folder\n"


def test_sample_writes_a_readable_grid(tmp_path):
    out = tmp_path / "grid" / "X.png"
    result = invoke("world", "sample", "-n", "4", "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"wrote 4 scenes to {out}"
    with Image.open(out) as image:
        image.load()
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (798, 270))  # 4 x (192 + 6) + 6, 192 + 66 + 12
        grid = image.copy()
    detector = WorldDetector()
    for i in range(4):
        x = 6 + i * 198
        cell = grid.crop((x, 6, x + 192, 6 + 192))  # each scene, scaled 3x with nearest
        detections = detector.detect(cell)
        assert detections and all(d.score == 1.0 for d in detections)
        caption = np.asarray(grid.crop((x, 6 + 192, x + 192, 270)).convert("L"))
        assert (caption < 100).any()  # the prompt is written under it


def test_sample_rejects_bad_n(tmp_path):
    assert_one_line_error(
        invoke("world", "sample", "-n", "0", "-o", tmp_path / "g.png"), "-n must be between 1 and 1024"
    )


def test_splits_command_rebuilds_shipped_files(tmp_path):
    result = invoke("world", "splits", tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("test: 474 prompts, sha256 71eb6dcb33ae")
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "manifest.json"):
        assert (tmp_path / name).read_bytes() == (shipped_dir() / name).read_bytes(), name
