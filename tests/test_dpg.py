"""DPG-Bench (thinkdraw.evaluator.dpg) against the official dpg_bench/compute_dpg_bench.py (TencentQQGYLab/ELLA):
the shipped prompts, the question file's format, the parent rule and its order, the 2x2 grid's crops, the means
and the category scores, with a scripted yes/no answerer; the judge adapter; the CLI and its one-line errors.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_cli import assert_one_line_error, invoke
from tiny_judges import tiny_llava_judge

from thinkdraw.cli.eval_cmds import JudgeVQA
from thinkdraw.errors import BenchmarkError, EvalFolderError
from thinkdraw.evaluator.dpg import (
    DPG_DATA,
    Question,
    apply_parents,
    crops,
    dpg_prompts,
    evaluate_images,
    read_images,
    read_questions,
    score_image,
    summarize,
)
from thinkdraw.judges.base import JudgeError
from thinkdraw.judges.chat import Completion

HEADER = (
    "item_id,text,keywords,proposition_id,dependency,category_broad,category_detailed,tuple,question_natural_language"
)
ROWS = [  # item 0's prompt: "An expansive field ... a collection of eight cabbages, their green heads round ..."
    '0,"An expansive field",,1,0,entity,whole,entity - whole (field),Is there a field?',
    '0,"An expansive field",,2,0,entity,whole,entity - whole (cabbages),Are there cabbages?',
    '0,"An expansive field",,3,2,other,count,"other - count (cabbages, ==8)",Are there eight cabbages?',
    '0,"An expansive field",,4,2,attribute,color,"attribute - color (cabbages, green)",Are the cabbages green?',
    '0,"An expansive field",,5,"2,4",attribute,shape,"attribute - shape (cabbages, round)",Are the cabbages round?',
    '1,"A fluffy cat",,1,0,entity,whole,entity - whole (cat),Is there a cat?',
    '1,"A fluffy cat",,2,1,attribute,texture,"attribute - texture (cat, fluffy)",Is the cat fluffy?',
]
QUARTERS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255))  # top-left, top-right, bottom-left, bottom-right


def write_questions(path: Path, rows=ROWS, header=HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def grid(r: int = 16) -> Image.Image:
    """A 2x2 grid of pictures r px a side, one flat colour each (QUARTERS, in the official crop order)."""
    image = Image.new("RGB", (2 * r, 2 * r))
    for (x, y), color in zip(((0, 0), (r, 0), (0, r), (r, r)), QUARTERS, strict=True):
        image.paste(color, (x, y, x + r, y + r))
    return image


class ScriptedVQA:
    """yes to the questions listed for the picture's colour; records what it was asked."""

    def __init__(self, yes_by_color: dict, fail_on: tuple = ()):
        self.yes_by_color, self.fail_on, self.asked = yes_by_color, fail_on, []

    def yes(self, image, questions):
        color = image.getpixel((0, 0))
        self.asked.append((color, image.size, list(questions)))
        if color in self.fail_on:
            raise JudgeError("the judge answered 'maybe', not yes or no")
        return [0.9 if q in self.yes_by_color.get(color, ()) else 0.1 for q in questions]


# -- the shipped prompts and the question file -------------------------------------------------------------------


def test_the_prompts_ship_with_their_license():
    prompts = dpg_prompts()
    assert len(prompts) == 1065
    assert prompts["0"].startswith("An expansive field, blanketed by the soft light of morning")
    assert "COCOval2014000000010363" in prompts and "partiprompts1" in prompts
    assert "Apache License" in (DPG_DATA / "LICENSE").read_text()
    root = Path(__file__).resolve().parent.parent
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["thinkdraw"]
    covered = {p for g in globs for p in (root / "thinkdraw").glob(g) if p.is_file()}
    assert {DPG_DATA / "LICENSE", *(DPG_DATA / "prompts").iterdir()} <= covered


def test_read_questions_keeps_every_row(tmp_path):
    items = read_questions(write_questions(tmp_path / "dpg_bench.csv"))
    assert list(items) == ["0", "1"]
    # the first data row is kept (the official loop's `if i == 0: continue` drops it)
    first = items["0"][0]
    assert first == Question(1, "Is there a field?", "entity - whole (field)", ())
    assert items["0"][4].parents == (2, 4)
    assert (items["0"][2].category, items["0"][2].l1) == ("other - count", "other")


@pytest.mark.parametrize(
    "rows, header, message",
    [
        (ROWS, "item_id,text,proposition_id,tuple", "no column dependency, question_natural_language"),
        (['0,t,,one,0,e,w,"entity - whole (x)",Is there x?'], HEADER, ":2: proposition_id and dependency"),
        (['0,t,,1,3,e,w,"entity - whole (x)",Is there x?'], HEADER, "question 1 depends on 3, not one of its"),
        (ROWS[:1] * 2, HEADER, "lists a proposition_id twice"),
        ([], HEADER, "no questions"),
    ],
)
def test_read_questions_errors(tmp_path, rows, header, message):
    with pytest.raises(BenchmarkError, match=message):
        read_questions(write_questions(tmp_path / "q.csv", rows, header))


def test_read_questions_needs_the_file(tmp_path):
    with pytest.raises(BenchmarkError, match="no such question file"):
        read_questions(tmp_path / "dpg_bench.csv")


# -- the parent rule ---------------------------------------------------------------------------------------------


def test_a_question_whose_parent_fails_scores_zero(tmp_path):
    questions = read_questions(write_questions(tmp_path / "q.csv"))["0"]
    # no cabbages: their count, colour and shape score 0 although answered yes
    assert apply_parents(questions, {1: True, 2: False, 3: True, 4: True, 5: True}) == {
        1: 1.0,
        2: 0.0,
        3: 0.0,
        4: 0.0,
        5: 0.0,
    }
    # cabbages, not green: the shape (parents 2 and 4) fails with the colour
    assert apply_parents(questions, {1: False, 2: True, 3: True, 4: False, 5: True}) == {
        1: 0.0,
        2: 1.0,
        3: 1.0,
        4: 0.0,
        5: 0.0,
    }


def test_the_rule_runs_in_the_files_order():
    # c (parent b) comes after b, which its own parent a zeroes: c is zeroed too. d (parent e) comes before e is
    # zeroed, so it keeps its yes: the official loop reads each parent's score as it stands at that point.
    a, b, c = Question(1, "a?", "e", ()), Question(2, "b?", "e", (1,)), Question(3, "c?", "e", (2,))
    d, e = Question(4, "d?", "e", (5,)), Question(5, "e?", "e", (1,))
    yes = {1: False, 2: True, 3: True, 4: True, 5: True}
    assert apply_parents([a, b, c, d, e], yes) == {1: 0.0, 2: 0.0, 3: 0.0, 4: 1.0, 5: 0.0}


# -- pictures, means, categories --------------------------------------------------------------------------------


def test_crops_are_the_official_boxes():
    pictures = crops(grid(16), pic_num=4, resolution=None)  # half the width: 16
    assert [p.size for p in pictures] == [(16, 16)] * 4
    assert [p.getpixel((0, 0)) for p in pictures] == list(QUARTERS)
    assert [p.getpixel((0, 0)) for p in crops(grid(16), 2, 16)] == list(QUARTERS[:2])
    assert crops(grid(16), 1, None)[0].size == (32, 32)  # one picture: the whole image
    assert crops(grid(16), 1, 16)[0].size == (16, 16)
    with pytest.raises(BenchmarkError, match="cannot hold 4 pictures of 20 px"):
        crops(grid(16), 4, 20)
    with pytest.raises(BenchmarkError, match="1 to 4 pictures"):
        crops(grid(16), 5, None)


def test_score_image_by_hand(tmp_path):
    questions = read_questions(write_questions(tmp_path / "q.csv"))["0"]
    q = [x.text for x in questions]
    vqa = ScriptedVQA(
        {
            QUARTERS[0]: q,  # all yes: 5/5
            QUARTERS[1]: [q[0], q[2], q[3]],  # no cabbages: only the field, 1/5
            QUARTERS[2]: [q[1], q[2], q[4]],  # not green: cabbages and their count, 2/5
            # white: all no, 0/5
        }
    )
    scored = score_image(grid(16), questions, vqa)
    assert scored.picture_scores == (1.0, 0.2, 0.4, 0.0)
    assert scored.score == pytest.approx(0.4)
    assert scored.last_answers == {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0}  # the last picture, before the rule
    assert [size for _, size, _ in vqa.asked] == [(16, 16)] * 4 and vqa.asked[0][2] == q
    # pic_num 2: the first two pictures
    assert score_image(grid(16), questions, vqa, pic_num=2).score == pytest.approx(0.6)


def test_categories_take_the_last_pictures_answers_before_the_rule(tmp_path):
    path = write_questions(tmp_path / "q.csv")
    questions = read_questions(path)
    q0 = [x.text for x in questions["0"]]
    # one picture each; item 0 answered "no cabbages, but eight, green and round": zeroed in the score only
    vqa = ScriptedVQA({QUARTERS[0]: [q0[0], q0[2], q0[3], q0[4], "Is there a cat?"]})
    images = {"0": tmp_path / "0.png", "1": tmp_path / "1.png"}
    for image in images.values():
        grid(16).save(image)
    results = evaluate_images(images, questions, vqa, pic_num=1, resolution=16)
    assert [r["score"] for r in results] == [pytest.approx(0.2), 0.5]
    summary = summarize(results, questions)
    assert summary.score == pytest.approx(100 * (0.2 + 0.5) / 2)
    assert summary.l2["entity - whole"] == pytest.approx(100 * 2 / 3)  # field yes, cabbages no, cat yes
    assert summary.l2["other - count"] == 100.0  # answered yes, though its parent failed
    assert summary.l1 == {"entity": pytest.approx(200 / 3), "other": 100.0, "attribute": pytest.approx(200 / 3)}
    assert (summary.scored, summary.failed) == (2, 0)


def test_an_image_the_judge_cannot_answer_is_left_out(tmp_path):
    questions = read_questions(write_questions(tmp_path / "q.csv"))
    images = {"0": tmp_path / "0.png", "1": tmp_path / "1.png"}
    grid(16).save(images["0"])
    Image.new("RGB", (32, 32), QUARTERS[1]).save(images["1"])
    vqa = ScriptedVQA({QUARTERS[0]: [x.text for x in questions["0"]]}, fail_on=(QUARTERS[1],))
    results = evaluate_images(images, questions, vqa, pic_num=1, resolution=16)
    assert results[1]["score"] is None and "could not answer" in results[1]["reason"]
    summary = summarize(results, questions)
    assert (summary.score, summary.scored, summary.failed) == (100.0, 1, 1)


# -- the folder --------------------------------------------------------------------------------------------------


def test_read_images_checks_the_layout(tmp_path):
    with pytest.raises(EvalFolderError, match="no such folder"):
        read_images(tmp_path / "nope", ["0"])
    with pytest.raises(EvalFolderError, match="no images"):
        read_images(tmp_path, ["0"])
    grid().save(tmp_path / "0.png")
    with pytest.raises(EvalFolderError, match="1 of the 2 prompts have no image \\(the first: 1.png\\)"):
        read_images(tmp_path, ["0", "1"])
    assert read_images(tmp_path, ["0", "1"], partial=True) == {"0": tmp_path / "0.png"}
    grid().save(tmp_path / "0.jpg")
    with pytest.raises(EvalFolderError, match="a second image for '0'"):
        read_images(tmp_path, ["0"])
    (tmp_path / "0.jpg").unlink()
    grid().save(tmp_path / "cat.png")
    with pytest.raises(EvalFolderError, match="cat.png: not a DPG-Bench prompt id"):
        read_images(tmp_path, ["0"])


# -- the judge adapter and the command line ----------------------------------------------------------------------


class FakeBackend:
    def __init__(self, answers):
        self.answers, self.turns = answers, []

    def complete(self, turns, max_tokens):
        self.turns += turns
        return self.answers[: len(turns)]


class FakeJudge:
    def __init__(self, backend):
        self.backend = backend


def test_judge_vqa_reads_p_yes_as_the_chat_judge_does():
    answers = [
        Completion("Yes", {"Yes": math.log(0.6), " yes": math.log(0.2), "No": math.log(0.2)}),
        Completion("no", {}),  # no log-probs: the answer's word
    ]
    backend = FakeBackend(answers)
    image = grid()
    assert JudgeVQA(FakeJudge(backend)).yes(image, ["Is there a cat?", "Is the cat fluffy?"]) == [
        pytest.approx(0.8),
        0.0,
    ]
    assert [t.text for t in backend.turns] == [
        "Is there a cat? Answer yes or no.",
        "Is the cat fluffy? Answer yes or no.",
    ]
    assert backend.turns[0].image is image
    with pytest.raises(JudgeError, match="not yes or no"):
        JudgeVQA(FakeJudge(FakeBackend([Completion("maybe", {})]))).yes(image, ["Is there a cat?"])


def test_cli_errors_are_one_line(tmp_path):
    csv = write_questions(tmp_path / "q.csv")
    images = tmp_path / "images"
    images.mkdir()
    grid().save(images / "0.png")
    assert_one_line_error(invoke("eval", "dpg", images), "--questions is required", "not shipped with thinkdraw")
    assert_one_line_error(invoke("eval", "dpg", images, "--questions", tmp_path / "nope.csv"), "no such question file")
    assert_one_line_error(invoke("eval", "dpg", tmp_path / "nope", "--questions", csv), "no such folder")
    assert_one_line_error(invoke("eval", "dpg", images, "--questions", csv), "1 of the 2 prompts have no image")
    assert_one_line_error(invoke("eval", "dpg", images, "--questions", csv, "--pic-num", 5), "--pic-num must be 1 to 4")
    args = ("eval", "dpg", images, "--questions", csv, "--partial", "--judge", tmp_path / "no-judge")
    assert_one_line_error(invoke(*args), "no-judge")


def yes_or_no_judge(path: Path) -> Path:
    """A tiny random LLaVA judge whose first answer token is always yes or no: every output row zero but those two,
    yes = v and no = -v (an untrained judge's top 20 tokens need not hold either)."""
    chat = tiny_llava_judge()
    head = chat.model.get_output_embeddings().weight
    yes, no = chat.tokenizer.convert_tokens_to_ids(["yes", "no"])
    with torch.no_grad():
        direction = torch.randn(head.shape[1], generator=torch.Generator().manual_seed(0))
        head.zero_()
        head[yes], head[no] = direction, -direction
    return chat.save(path)


def test_cli_scores_with_a_judge_folder(tmp_path):
    csv = write_questions(tmp_path / "q.csv")
    images = tmp_path / "images"
    images.mkdir()
    for item in ("0", "1"):
        grid(32).save(images / f"{item}.png")
    judge = yes_or_no_judge(tmp_path / "judge")
    result = invoke("eval", "dpg", images, "--questions", csv, "--judge", judge, "--device", "cpu")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (images / "dpg_results.jsonl").read_text().splitlines()]
    assert [r["item_id"] for r in rows] == ["0", "1"]
    for row in rows:
        assert len(row["picture_scores"]) == 4 and 0 <= row["score"] <= 1
        assert row["score"] == pytest.approx(sum(row["picture_scores"]) / 4)
    assert "DPG-Bench score" in result.stdout
