"""What every judge answers, whatever runs it: a transformers VLM, an OpenAI-compatible server, a world judge.

A judge looks at a query (the prompt, an image or a partial image, optionally the plan) and answers one of
four kinds of question:

    yes(queries, question)   -> P(yes) per query, for a yes/no question (QUESTIONS)
    score(queries, question) -> a 0-10 rating per query (outcome, semantic or spatial)
    ground(queries, phrases) -> the box of the named object per query, on the plan grid, or None if not seen
    feedback(queries)        -> one sentence per query naming what is wrong ("" when nothing is)

Every method takes a batch and answers in its order, so a backend can batch forwards or send requests side by
side. A judge that cannot answer (a server down, an answer it cannot read) raises JudgeError with the reason in
one line; rewards turn that into None plus the reason, never into a silent 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from thinkdraw.errors import ThinkdrawError
from thinkdraw.plan import GRID

# The yes/no questions (the prompts are in thinkdraw.judges.prompts):
#   outcome   - does the finished image show everything the prompt asks for (ORM; best-of-N)
#   process   - is what is drawn so far right (PRM, step-wise selection over partial images)
#   clarity   - is enough of a partial image drawn to judge it (PARM's first stage)
#   potential - can this partial image still become a right one (PARM's second stage)
#   semantic  - does the plan's text name what the prompt asks for (GoT-R1's R_sem; the image is optional)
#   spatial   - are the planned boxes, drawn on a canvas, placed as the prompt says (GoT-R1's R_spa)
#   reflect   - after a pick: is the image aligned with the prompt, or should the policy try again (PARM++)
QUESTIONS = ("outcome", "process", "clarity", "potential", "semantic", "spatial", "reflect")
PARTIAL_QUESTIONS = ("process", "clarity", "potential")  # asked of partial images (Query.progress < 1)

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) on the plan grid, 0..GRID


class JudgeError(ThinkdrawError):
    """A judge that could not give an answer: the reason, in one line."""


@dataclass(frozen=True)
class Query:
    prompt: str
    image: Image.Image | None = None  # None for text-only questions (semantic)
    plan: str | None = None
    progress: float = 1.0  # the share of the image's tokens drawn so far (a partial image when < 1)


class Judge(Protocol):
    def yes(self, queries: Sequence[Query], question: str = "outcome") -> list[float]: ...

    def score(self, queries: Sequence[Query], question: str = "outcome") -> list[float]: ...

    def ground(self, queries: Sequence[Query], phrases: Sequence[str]) -> list[Box | None]: ...

    def feedback(self, queries: Sequence[Query]) -> list[str]: ...


def check_question(question: str) -> str:
    if question not in QUESTIONS:
        raise JudgeError(f"unknown question {question!r}: choose one of {', '.join(QUESTIONS)}")
    return question


def yes_probability(yes_logit: float, no_logit: float) -> float:
    """P(yes) from the logits (or log-probs) of the first answer token being "yes" or "no", renormalised over
    the two; the rest of the vocabulary does not count as either answer."""
    if not (math.isfinite(yes_logit) or math.isfinite(no_logit)):
        raise JudgeError("neither 'yes' nor 'no' has any probability as the first answer token")
    top = max(yes_logit, no_logit)
    a, b = math.exp(yes_logit - top), math.exp(no_logit - top)
    return a / (a + b)


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_BOX = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*,?\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)")
NOTHING = "nothing"  # what a feedback answer says when the image is right


def parse_score(text: str) -> float:
    """The first number of an answer, which must lie in 0..10."""
    match = _NUMBER.search(text)
    if match is None:
        raise JudgeError(f"the judge's score answer has no number: {text[:80]!r}")
    value = float(match.group())
    if not 0 <= value <= 10:
        raise JudgeError(f"the judge's score {value:g} is outside 0-10")
    return value


def parse_box(text: str) -> Box | None:
    """A box "(x0,y0),(x1,y1)" on the plan grid; None when the answer says the object is not there."""
    match = _BOX.search(text)
    if match is None:
        if re.search(r"\b(none|no|not)\b", text.lower()):
            return None
        raise JudgeError(f"the judge's grounding answer is not a box: {text[:80]!r}")
    x0, y0, x1, y1 = (int(v) for v in match.groups())
    if not (0 <= x0 < x1 <= GRID and 0 <= y0 < y1 <= GRID):
        raise JudgeError(f"the judge's box {(x0, y0, x1, y1)} is not a box on the 0-{GRID} grid")
    return (x0, y0, x1, y1)


def format_box(box: Box | None) -> str:
    return "none" if box is None else f"({box[0]},{box[1]}),({box[2]},{box[3]})"


def parse_feedback(text: str) -> str:
    """The feedback sentence; "" when the judge says nothing is wrong."""
    text = text.strip()
    return "" if text.lower().rstrip(".") in (NOTHING, "") else text
