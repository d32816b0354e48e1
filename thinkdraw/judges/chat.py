"""Judges that answer by chat: one user turn (an image, then our question text), a short answer.

A chat backend completes a batch of turns and, for each, returns the answer text and the log-probs of the
first answer token's most likely candidates. Two backends implement it: a transformers VLM on this machine
(thinkdraw.judges.vlm) and an OpenAI-compatible server (thinkdraw.judges.http), which `thinkdraw serve-judge`
can put in front of any local one. ChatJudge turns either into a Judge, so every question is asked, and every
answer read, in this one place:

    yes      -> 1 token; P(yes) from the first token's log-probs of "yes" and "no" (yes_probability)
    score    -> a few tokens; the number in the answer (parse_score)
    ground   -> a box "(x0,y0),(x1,y1)" or "none" (parse_box)
    feedback -> one sentence, "nothing" when the image is right (parse_feedback)
    describe -> every object seen with its box, in the plan format (the world judges learn to see by it)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

from thinkdraw.judges.base import (
    QUESTIONS,
    Box,
    JudgeError,
    Query,
    check_question,
    parse_box,
    parse_feedback,
    parse_score,
    yes_probability,
)
from thinkdraw.judges.prompts import describe_text, feedback_text, ground_text, question_text, score_text

TOP_LOGPROBS = 20  # candidates asked for at the first answer token (OpenAI's maximum)
SCORE_TOKENS = 4
GROUND_TOKENS = 24
FEEDBACK_TOKENS = 48
DESCRIBE_TOKENS = 256


@dataclass(frozen=True)
class Turn:
    """One user turn: the image (if any) goes before the text."""

    text: str
    image: Image.Image | None = None


@dataclass(frozen=True)
class Completion:
    text: str
    first_logprobs: dict[str, float] = field(default_factory=dict)  # candidate token text -> log-prob


class ChatBackend(Protocol):
    def complete(self, turns: Sequence[Turn], max_tokens: int) -> list[Completion]:
        """Greedy answers, in the order of `turns`; raises JudgeError when it cannot answer."""
        ...


def answer_logprob(first_logprobs: dict[str, float], word: str) -> float:
    """log P(first token is `word`), summed over its spellings ("yes", " Yes", "YES"); -inf if none is listed."""
    found = [lp for token, lp in first_logprobs.items() if token.strip().lower() == word]
    if not found:
        return -math.inf
    top = max(found)
    return top + math.log(sum(math.exp(lp - top) for lp in found))


ASKS = (*QUESTIONS, "score", "ground", "feedback", "describe")  # what a turn can ask: a yes/no question or another kind


def turn_for(query: Query, ask: str, phrase: str | None = None) -> Turn:
    """The turn that asks `ask` about the query (ground: where the `phrase` is): what ChatJudge sends, and what
    a judge is trained on."""
    if ask == "score":
        return Turn(score_text(query), query.image)
    if ask == "ground":
        return Turn(ground_text(query, phrase or ""), query.image)
    if ask == "feedback":
        return Turn(feedback_text(query), query.image)
    if ask == "describe":
        return Turn(describe_text(query), query.image)
    return Turn(question_text(query, ask), query.image)


class ChatJudge:
    """A Judge over a chat backend: our questions in, their answers read."""

    def __init__(self, backend: ChatBackend):
        self.backend = backend

    def _ask(self, turns: list[Turn], max_tokens: int) -> list[Completion]:
        answers = self.backend.complete(turns, max_tokens)
        if len(answers) != len(turns):
            raise JudgeError(f"the judge answered {len(answers)} of {len(turns)} questions")
        return answers

    def yes(self, queries: Sequence[Query], question: str = "outcome") -> list[float]:
        check_question(question)
        answers = self._ask([turn_for(q, question) for q in queries], max_tokens=1)
        return [_yes(a) for a in answers]

    def score(self, queries: Sequence[Query], question: str = "outcome") -> list[float]:
        answers = self._ask([Turn(score_text(q, question), q.image) for q in queries], SCORE_TOKENS)
        return [parse_score(a.text) for a in answers]

    def ground(self, queries: Sequence[Query], phrases: Sequence[str]) -> list[Box | None]:
        if len(phrases) != len(queries):
            raise JudgeError(f"{len(phrases)} phrases for {len(queries)} queries")
        turns = [turn_for(q, "ground", p) for q, p in zip(queries, phrases, strict=True)]
        return [parse_box(a.text) for a in self._ask(turns, GROUND_TOKENS)]

    def feedback(self, queries: Sequence[Query]) -> list[str]:
        answers = self._ask([turn_for(q, "feedback") for q in queries], FEEDBACK_TOKENS)
        return [parse_feedback(a.text) for a in answers]

    def describe(self, queries: Sequence[Query]) -> list[str]:
        """What the judge sees in each image: its objects and boxes as plan text ("none" for an empty one)."""
        return [a.text for a in self._ask([turn_for(q, "describe") for q in queries], DESCRIBE_TOKENS)]


def _yes(answer: Completion) -> float:
    yes_lp = answer_logprob(answer.first_logprobs, "yes")
    no_lp = answer_logprob(answer.first_logprobs, "no")
    if not (math.isfinite(yes_lp) or math.isfinite(no_lp)):
        # the backend gave no log-probs, or neither word among them: read the answer itself, if it says one
        word = answer.text.strip().lower().rstrip(".")
        if word in ("yes", "no"):
            return 1.0 if word == "yes" else 0.0
        listed = ", ".join(sorted(answer.first_logprobs)[:5]) or "no log-probs"
        raise JudgeError(f"the judge answered {answer.text[:40]!r} ({listed}), not yes or no")
    return yes_probability(yes_lp, no_lp)
