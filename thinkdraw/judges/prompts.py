"""The judges' questions, written once: every backend asks these, and the world judges are trained on them.

Each function returns the user turn's text; the image (when there is one) goes before it in the chat. Answers
are short so the first answer token decides: "yes"/"no", a number 0-10, a box "(x0,y0),(x1,y1)" on the plan
grid (or "none"), or one sentence of feedback ("nothing" when the image is right). One more, `describe` (every
object seen, with its box, in the plan format), is what a judge is trained to answer so that it learns to see.
"""

from __future__ import annotations

from thinkdraw.judges.base import JudgeError, Query, check_question

YES_NO = "Answer yes or no."


def _request(query: Query) -> str:
    return f'The request is "{query.prompt}".'


def _drawn(query: Query) -> str:
    """Partial images are drawn row by row from the top; the judge is told how much is there."""
    return f"The picture is drawn from the top down, and {round(100 * query.progress)} percent of it is done."


def question_text(query: Query, question: str) -> str:
    check_question(question)
    request = _request(query)
    if question == "outcome":
        return f"{request} Does the picture show all of it, with the right counts, colours and places? {YES_NO}"
    if question == "reflect":
        return f"{request} Is the picture right, or should it be drawn again? Right means yes. {YES_NO}"
    if question == "process":
        return f"{request} {_drawn(query)} Is everything drawn so far right for the request? {YES_NO}"
    if question == "clarity":
        return f"{request} {_drawn(query)} Is enough of it drawn to tell whether it will be right? {YES_NO}"
    if question == "potential":
        return f"{request} {_drawn(query)} Can it still become a right picture of the request? {YES_NO}"
    if question == "semantic":
        return (
            f'{request} The plan is "{query.plan}". Does the plan name every object the request asks for, '
            f"with the right counts and colours? {YES_NO}"
        )
    # spatial: the image is the plan's boxes drawn on a blank canvas
    return f"{request} The picture shows the planned boxes. Are they placed as the request says? {YES_NO}"


SCORED = ("outcome", "semantic", "spatial")  # the questions a judge can also answer with a 0-10 rating


def score_text(query: Query, question: str = "outcome") -> str:
    """The 0-10 rating of GoT-R1's rewards: of the image (outcome), the plan's text (semantic) or the plan's
    boxes drawn on a canvas (spatial)."""
    request, scale = _request(query), "from 0 to 10? Answer with one number."
    if question == "outcome":
        return f"{request} How well does the picture show it, {scale}"
    if question == "semantic":
        return (
            f'{request} The plan is "{query.plan}". How well does the plan name every object the request asks for, '
            f"with the right counts and colours, {scale}"
        )
    if question == "spatial":
        return f"{request} The picture shows the planned boxes. How well are they placed as the request says, {scale}"
    raise JudgeError(f"the {question!r} question has no 0-10 rating: rate one of {', '.join(SCORED)}")


def ground_text(query: Query, phrase: str) -> str:
    return (
        f'Where is the "{phrase}" in the picture? Answer with its box as (x0,y0),(x1,y1) on a 0 to 1000 grid, '
        "or none if it is not there."
    )


def feedback_text(query: Query) -> str:
    return f"{_request(query)} What is wrong with the picture? Answer in one sentence, or nothing if it is right."


def describe_text(query: Query) -> str:
    return (
        "List every object in the picture, top to bottom, as colour, shape and box (x0,y0),(x1,y1) on a 0 to 1000 "
        "grid, separated by semicolons, or none if there is none."
    )
