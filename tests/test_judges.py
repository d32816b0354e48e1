"""The judge protocol's pieces: questions, answer parsing, and ChatJudge over a scripted chat backend."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from thinkdraw.judges.base import (
    QUESTIONS,
    JudgeError,
    Query,
    check_question,
    format_box,
    parse_box,
    parse_feedback,
    parse_score,
    yes_probability,
)
from thinkdraw.judges.chat import DESCRIBE_TOKENS, ChatJudge, Completion, answer_logprob
from thinkdraw.judges.prompts import describe_text, feedback_text, ground_text, question_text, score_text

IMAGE = Image.new("RGB", (32, 32), (200, 10, 10))


class Scripted:
    """A chat backend answering from a list, recording what it was asked."""

    def __init__(self, answers: list[Completion]):
        self.answers, self.turns, self.max_tokens = answers, [], []

    def complete(self, turns, max_tokens):
        self.turns += turns
        self.max_tokens.append(max_tokens)
        return [self.answers.pop(0) for _ in turns]


def test_yes_probability_renormalises_over_yes_and_no():
    assert yes_probability(0.0, 0.0) == 0.5
    assert yes_probability(math.log(0.3), math.log(0.1)) == pytest.approx(0.75)
    assert yes_probability(1000.0, -1000.0) == 1.0  # no overflow
    assert yes_probability(-math.inf, 0.0) == 0.0
    with pytest.raises(JudgeError, match="neither"):
        yes_probability(-math.inf, -math.inf)


def test_answer_logprob_sums_the_spellings_of_a_word():
    lps = {"yes": math.log(0.2), " Yes": math.log(0.1), "no": math.log(0.3), "maybe": math.log(0.1)}
    assert answer_logprob(lps, "yes") == pytest.approx(math.log(0.3))
    assert answer_logprob(lps, "no") == pytest.approx(math.log(0.3))
    assert answer_logprob(lps, "none") == -math.inf


def test_chat_judge_yes_reads_the_first_tokens_logprobs():
    backend = Scripted(
        [
            Completion("yes", {"yes": math.log(0.6), "no": math.log(0.2)}),
            Completion("No", {"No": math.log(0.9)}),  # "yes" not among the candidates: P(yes) = 0
            Completion("yes", {}),  # a server without log-probs: the answer's own word
            Completion("blue", {"blue": -0.1, "red": -3.0}),
        ]
    )
    judge = ChatJudge(backend)
    queries = [Query("a photo of a red circle", IMAGE)] * 3
    assert judge.yes(queries, "outcome") == [pytest.approx(0.75), 0.0, 1.0]
    assert backend.max_tokens == [1]
    assert backend.turns[0].image is IMAGE and backend.turns[0].text == question_text(queries[0], "outcome")
    with pytest.raises(JudgeError, match="'blue'.*not yes or no"):
        judge.yes(queries[:1])


def test_chat_judge_score_ground_feedback_describe():
    backend = Scripted(
        [
            Completion("7"),
            Completion("(10,20),(300,400)"),
            Completion("none"),
            Completion("Nothing."),
            Completion("the square is red, not blue."),
            Completion("red square (0,0),(375,375)"),
        ]
    )
    judge = ChatJudge(backend)
    q = Query("a photo of a blue square", IMAGE)
    assert judge.score([q]) == [7.0]
    assert judge.ground([q, q], ["blue square", "red star"]) == [(10, 20, 300, 400), None]
    assert judge.feedback([q, q]) == ["", "the square is red, not blue."]
    assert backend.turns[1].text == ground_text(q, "blue square")
    assert judge.describe([q]) == ["red square (0,0),(375,375)"]
    assert backend.turns[-1].text == describe_text(q) and backend.turns[-1].image is IMAGE
    assert backend.max_tokens[-1] == DESCRIBE_TOKENS
    with pytest.raises(JudgeError, match="2 phrases for 1 queries"):
        judge.ground([q], ["a", "b"])


def test_a_backend_answering_too_few_is_an_error():
    class Short(Scripted):
        def complete(self, turns, max_tokens):
            return []

    with pytest.raises(JudgeError, match="answered 0 of 1"):
        ChatJudge(Short([])).yes([Query("x", IMAGE)])


def test_parsers():
    assert parse_score("8 out of 10") == 8.0 and parse_score(" 3.5") == 3.5
    for bad, message in [("great", "no number"), ("11", "outside 0-10"), ("-1", "outside 0-10")]:
        with pytest.raises(JudgeError, match=message):
            parse_score(bad)
    assert parse_box("( 1 , 2 ) , ( 30 , 40 )") == (1, 2, 30, 40)
    assert parse_box("it is not there") is None
    for bad in ("(5,5),(5,9)", "(0,0),(1001,10)", "somewhere left"):
        with pytest.raises(JudgeError):
            parse_box(bad)
    assert parse_box(format_box((1, 2, 3, 4))) == (1, 2, 3, 4) and parse_box(format_box(None)) is None
    assert parse_feedback("  nothing ") == "" and parse_feedback("too many stars") == "too many stars"


def test_every_question_has_its_own_text_and_partial_ones_say_how_much_is_drawn():
    q = Query("a photo of a star", IMAGE, "star (0,0),(500,500)", progress=0.25)
    texts = {question: question_text(q, question) for question in QUESTIONS}
    assert len(set(texts.values())) == len(QUESTIONS)
    assert all('"a photo of a star"' in t for t in texts.values())
    for question in ("process", "clarity", "potential"):
        assert "25 percent" in texts[question]
    assert "star (0,0),(500,500)" in texts["semantic"]
    assert len({score_text(q), score_text(q, "semantic"), score_text(q, "spatial"), feedback_text(q)}) == 4
    with pytest.raises(JudgeError, match="no 0-10 rating"):
        score_text(q, "clarity")
    with pytest.raises(JudgeError, match="unknown question 'beauty'"):
        check_question("beauty")
