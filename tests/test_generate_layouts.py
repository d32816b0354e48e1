"""`thinkdraw generate --benchmark t2i-compbench | dpg` on a tiny saved policy: the folders hold exactly what the
evaluators' own readers find, a rerun skips what is done, and bad input is one line, exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_cli import assert_one_line_error, invoke
from test_cli_model import FAST, model_dir, no_progress_bars  # noqa: F401 (fixtures)
from test_cli_verify import judge_dir  # noqa: F401 (fixture)
from test_dpg import write_questions, yes_or_no_judge

from thinkdraw.evaluator.dpg import crops, read_images
from thinkdraw.evaluator.geneval import load_image
from thinkdraw.evaluator.t2icompbench import read_samples, t2icompbench_prompts

torch.set_num_threads(1)

COLOR_PROMPTS = ["a brown tree and a green grass", "a green tree and a brown grass"]  # the two in world words
DPG_PROMPTS = {"0": "a photo of a red circle", "1": "a photo of two blue squares"}  # the items of test_dpg's ROWS


def t2i_args(folder: Path) -> list:
    prompts = folder / "color.txt"
    prompts.write_text("".join(f"{p}\n" for p in COLOR_PROMPTS))
    return ["--benchmark", "t2i-compbench", "--metadata", prompts, "--outdir", folder / "out"]


def dpg_args(folder: Path) -> list:
    prompts = folder / "prompts"
    prompts.mkdir()
    for item, prompt in DPG_PROMPTS.items():
        (prompts / f"{item}.txt").write_text(prompt + "\n")
    return ["--benchmark", "dpg", "--metadata", prompts, "--outdir", folder / "out"]


def generate(model: Path, args: list, *extra):
    result = invoke("generate", "--model", model, *args, "--images-per-prompt", 2, "--batch-size", 4, *extra, *FAST)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == f"wrote 2 prompts x 2 images to {args[-1]}"
    return args[-1]


def files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def mtimes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in files(folder)}


def plan_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "plans.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def t2i_out(model_dir, tmp_path_factory) -> Path:  # noqa: F811
    return generate(model_dir, t2i_args(tmp_path_factory.mktemp("t2i")))


@pytest.fixture(scope="module")
def dpg_out(model_dir, tmp_path_factory) -> Path:  # noqa: F811
    return generate(model_dir, dpg_args(tmp_path_factory.mktemp("dpg")))


def test_t2i_compbench_folder_is_what_its_evaluator_reads(t2i_out):
    assert set(COLOR_PROMPTS) <= set(t2icompbench_prompts("color"))
    samples = read_samples(t2i_out, "color", partial=True)
    # question_ids run over the folder's images, prompt by prompt (as the official generation script numbers them)
    numbered = [(p, 2 * k + j) for k, p in enumerate(COLOR_PROMPTS) for j in (0, 1)]
    assert [(s.prompt, s.question_id) for s in samples] == numbered
    assert files(t2i_out) == {s.path for s in samples} | {t2i_out / "plans.jsonl"}
    assert all(load_image(s.path).size == (64, 64) for s in samples)
    lines = plan_lines(t2i_out)
    assert [line["prompt"] for line in lines] == COLOR_PROMPTS
    assert [[t2i_out / name for name in line["images"]] for line in lines] == [
        [s.path for s in samples if s.prompt == prompt] for prompt in COLOR_PROMPTS
    ]
    assert all(len(line["plans"]) == 2 and all(isinstance(p, str) for p in line["plans"]) for line in lines)


def test_dpg_folder_is_what_its_evaluator_reads(dpg_out, tmp_path):
    images = read_images(dpg_out, list(DPG_PROMPTS))
    assert files(dpg_out) == set(images.values()) | {dpg_out / "plans.jsonl"}
    for path in images.values():  # the prompt's two images, where the scorer crops a grid's first two pictures
        assert [p.size for p in crops(load_image(path), pic_num=2, resolution=None)] == [(64, 64), (64, 64)]
    lines = plan_lines(dpg_out)
    assert [(line["item_id"], line["prompt"]) for line in lines] == list(DPG_PROMPTS.items())
    assert [[dpg_out / name for name in line["images"]] for line in lines] == [[images[item]] for item in DPG_PROMPTS]
    assert all(len(line["plans"]) == 2 for line in lines)

    # and `thinkdraw eval dpg` scores it, two pictures an image
    questions, judge = write_questions(tmp_path / "q.csv"), yes_or_no_judge(tmp_path / "judge")
    outfile = tmp_path / "results.jsonl"
    args = ("--questions", questions, "--judge", judge, "--pic-num", 2, "--device", "cpu", "--outfile", outfile)
    result = invoke("eval", "dpg", dpg_out, *args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in outfile.read_text().splitlines()]
    assert [(r["item_id"], len(r["picture_scores"])) for r in rows] == [("0", 2), ("1", 2)]


@pytest.mark.parametrize("layout", [t2i_args, dpg_args])
def test_a_rerun_skips_what_is_done(model_dir, tmp_path, layout):  # noqa: F811
    args = layout(tmp_path)
    outdir = generate(model_dir, args)
    before = mtimes(outdir)
    generate(model_dir, args)
    assert mtimes(outdir) == before  # nothing written again, plans.jsonl included

    # a prompt with an image missing is drawn again (the same image), the other left alone
    first, second = (line["images"] for line in plan_lines(outdir))
    drawn = (outdir / second[-1]).read_bytes()
    (outdir / second[-1]).unlink()
    generate(model_dir, args)
    after = mtimes(outdir)
    assert all(after[outdir / name] == before[outdir / name] for name in first)
    assert all(after[outdir / name] > before[outdir / name] for name in second[:-1])
    assert (outdir / second[-1]).read_bytes() == drawn
    assert [line["images"] for line in plan_lines(outdir)] == [first, second, second]  # its last line counts


def test_dpg_with_a_verifier_writes_its_choices(model_dir, judge_dir, tmp_path):  # noqa: F811
    outdir = generate(model_dir, dpg_args(tmp_path), "--verifier", "bon", "-N", 2, "--judge", judge_dir)
    for line in plan_lines(outdir):
        assert len(line["verifier"]) == 2  # one choice per picture of the grid
        assert all(len(v["scores"]) == 2 and max(v["scores"]) == v["scores"][v["chosen"]] for v in line["verifier"])


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--benchmark", "imagenet", "--metadata", "p.txt"], "unknown benchmark 'imagenet'; choose one of geneval"),
        (["--benchmark", "t2i-compbench", "--category", "colour"], "unknown T2I-CompBench category 'colour'"),
        (["--benchmark", "t2i-compbench", "--category", "3d_spatial"], "3d_spatial is not scored"),
        (["--category", "color", "--metadata", "p.jsonl"], "--category is not used without --benchmark t2i-compbench"),
        (["--benchmark", "dpg", "--category", "color"], "--category is not used without --benchmark t2i-compbench"),
        (["--benchmark", "t2i-compbench"], "give either --category C (its shipped prompts) or --metadata FILE"),
        (["--benchmark", "t2i-compbench", "--category", "color", "--metadata", "p.txt"], "(not both)"),
        (["--benchmark", "t2i-compbench", "--metadata", "nope.txt"], "nope.txt: no such file"),
        (["--benchmark", "t2i-compbench", "--metadata", "empty.txt"], "empty.txt: no prompts"),
        (["--benchmark", "t2i-compbench", "--metadata", "slash.txt"], "the prompt 'a red/blue circle' cannot name"),
        (["--benchmark", "dpg", "--metadata", "nope"], "nope: no such file or folder"),
        (["--benchmark", "dpg", "--metadata", "none"], "none: no prompts"),
        (["--benchmark", "dpg", "--metadata", "p.txt"], "p.txt: expected one prompt on one line, found 2 lines"),
        (["--benchmark", "dpg", "--images-per-prompt", "5"], "a DPG-Bench image is a grid of 1 to 4 pictures"),
        (["--benchmark", "dpg", "--given-plans"], "--given-plans is not used with --benchmark dpg"),
        (["--benchmark", "dpg", "a photo of a circle"], "--benchmark dpg draws its prompts into --outdir"),
        (["--metadata", "empty.txt"], "empty.txt: no records"),  # GenEval's layout
    ],
)
def test_bad_input_is_one_line(model_dir, tmp_path, monkeypatch, args, fragment):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    Path("p.txt").write_text("a photo of a red circle\na photo of a blue star\n")
    Path("empty.txt").write_text("\n")
    Path("slash.txt").write_text("a red/blue circle\n")
    Path("none").mkdir()
    assert_one_line_error(invoke("generate", "--model", model_dir, "--outdir", "out", *args, *FAST), fragment)
    assert not Path("out").exists()


def test_benchmark_needs_an_outdir(model_dir):  # noqa: F811
    result = invoke("generate", "--model", model_dir, "--benchmark", "dpg")
    assert_one_line_error(result, "--benchmark dpg needs --outdir")
