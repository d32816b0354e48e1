"""A judge that answers by GenEval's rules over a detector's findings: the Judge protocol for Mask2Former on real
images (with GenEval's metadata), or for a detector learned in the world.

It needs each prompt's GenEval record (its include / exclude clauses): `record_of(prompt)` gives it (GenEval's
metadata file as a dict's `get`, or an environment's prompt reader), and a prompt without one is a JudgeError
naming it. Its answers:

    outcome, reflect   1.0 when the image passes the rules; else half the share of include clauses met (0 when
                       an exclude clause fails), so near misses rank above far ones in best-of-N
    process, potential on a partial image (progress < 1): the rules over the objects drawn whole so far (their box
                       ends above the drawing frontier), forgiving what more drawing can still add: 0.0 when those
                       objects already break a rule (a wrong colour, a wrong place, too many), or when the query
                       carries a plan that breaks the prompt's rules (check_plan: a policy that thinks first draws
                       what it planned), else 1.0; on a finished image, the outcome answer
    clarity            1.0 when a partial image already breaks a rule, or its plan does (the verdicts a partial
                       image makes sure), else 0.0; PARM asks potential at the first clear step, so it stops the
                       paths that cannot recover, and those whose plan is wrong at its first check
    semantic, spatial  check_plan on the query's plan text (the plan's names; its boxes' relations); a prompt
                       without a relation is spatially right
    score              10 x the outcome's clause share
    ground             the box of a detection the phrase names (its class, and colour when the phrase starts with
                       one), on the plan grid: the one nearest the phrase's box in the query's plan when the plan
                       names it (GoT-R1's R_RI compares the two), else the most confident
    feedback           `feedback_of(record, verdict)` (default: the rules' failure messages), "" when right

Colours come from detector.colors, so a detector that reads them itself and one that needs a classifier both work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from thinkdraw.evaluator.detection import Detection, Detector
from thinkdraw.evaluator.plans import check_plan
from thinkdraw.evaluator.rules import COLOR_NAMES, Verdict, judge
from thinkdraw.judges.base import Box, JudgeError, Query, check_question
from thinkdraw.plan import PlanError, parse_plan, to_grid

FRONTIER_MARGIN = 0.05  # a detection counts as drawn whole when its box ends this share of the height above the
# frontier (the last rows drawn may hold a half-drawn object the detector misreads)
RECOVERABLE = ("count",)  # failures more drawing can still fix: an object not drawn yet


def clause_share(record: dict, verdict: Verdict) -> float:
    """The share of include clauses met; 0 when an exclude clause fails."""
    if any(f.kind == "exclude" for f in verdict.failures):
        return 0.0
    include = record.get("include", [])
    failed = {f.clause for f in verdict.failures}
    return (len(include) - len(failed)) / len(include) if include else 0.0


def _failure_messages(record: dict, verdict: Verdict) -> str:
    return "; ".join(f.message for f in verdict.failures)


class RuleJudge:
    def __init__(
        self,
        detector: Detector,
        record_of: Callable[[str], dict | None],
        feedback_of: Callable[[dict, Verdict], str] = _failure_messages,
    ):
        self.detector, self.record_of, self.feedback_of = detector, record_of, feedback_of

    def _record(self, query: Query) -> dict:
        record = self.record_of(query.prompt)
        if record is None:
            raise JudgeError(f"the rule judge has no GenEval record for the prompt {query.prompt!r}")
        return record

    def _verdict(self, query: Query) -> tuple[dict, Verdict]:
        if query.image is None:
            raise JudgeError("the rule judge needs an image for this question")
        record = self._record(query)
        detections = self.detector.detect(query.image)
        if query.progress < 1:
            frontier = (query.progress - FRONTIER_MARGIN) * query.image.height
            detections = [d for d in detections if d.box[3] <= frontier]
        image = query.image
        return record, judge(record, detections, lambda dets: self.detector.colors(image, dets))

    def _partial_ok(self, query: Query) -> bool:
        """Whether the objects drawn whole so far break no rule that more drawing cannot fix, and the plan, when
        the query carries one that can be read, breaks none either."""
        record, verdict = self._verdict(query)
        if not _plan_ok(query.plan, record):
            return False
        failed = {f.clause for f in verdict.failures if f.kind != "exclude"}

        def recoverable(f) -> bool:  # a missing object, or a place relative to one (its target not drawn yet)
            target = record["include"][f.clause]["position"][1] if f.kind == "position" else None
            return f.kind in RECOVERABLE or (target is not None and target in failed)

        return all(recoverable(f) for f in verdict.failures)

    def _outcome(self, query: Query) -> float:
        record, verdict = self._verdict(query)
        return 1.0 if verdict.correct else 0.5 * clause_share(record, verdict)

    def _plan_check(self, query: Query):
        if not query.plan:
            raise JudgeError("the rule judge needs the plan for the semantic and spatial questions")
        try:
            return check_plan(parse_plan(query.plan), self._record(query))
        except PlanError as err:
            raise JudgeError(f"the plan cannot be read: {err}") from None

    def yes(self, queries: Sequence[Query], question: str = "outcome") -> list[float]:
        check_question(question)
        answers = []
        for q in queries:
            partial = q.progress < 1
            if question == "semantic":
                answers.append(float(self._plan_check(q).semantic))
            elif question == "spatial":
                answers.append(float(self._plan_check(q).spatial is not False))
            elif question == "clarity":
                answers.append(float(partial and not self._partial_ok(q)))
            elif partial and question in ("process", "potential"):
                answers.append(float(self._partial_ok(q)))
            else:
                answers.append(self._outcome(q))
        return answers

    def score(self, queries: Sequence[Query], question: str = "outcome") -> list[float]:
        check_question(question)
        if question in ("semantic", "spatial"):
            return [10 * a for a in self.yes(queries, question)]
        return [10 * clause_share(*self._verdict(q)) for q in queries]

    def ground(self, queries: Sequence[Query], phrases: Sequence[str]) -> list[Box | None]:
        return [self._ground(q, phrase) for q, phrase in zip(queries, phrases, strict=True)]

    def _ground(self, query: Query, phrase: str) -> Box | None:
        if query.image is None:
            raise JudgeError("the rule judge needs an image to ground an object in")
        words = phrase.lower().split()
        color = words[0] if words and words[0] in COLOR_NAMES else None
        name = " ".join(words[1:] if color else words)
        found: list[Detection] = [d for d in self.detector.detect(query.image) if d.label == name]
        if color is not None and found:
            colors = self.detector.colors(query.image, found)
            found = [d for d, c in zip(found, colors, strict=True) if c == color]
        if not found:
            return None
        width, height = query.image.size
        boxes = [_grid_box(d.box, width, height) for d in sorted(found, key=lambda d: -d.score)]
        planned = _planned_box(query.plan, phrase)
        if planned is None:
            return boxes[0]
        return min(boxes, key=lambda b: _centre_distance(b, planned))

    def feedback(self, queries: Sequence[Query]) -> list[str]:
        out = []
        for q in queries:
            record, verdict = self._verdict(q)
            out.append("" if verdict.correct else self.feedback_of(record, verdict))
        return out


def _plan_ok(plan: str | None, record: dict) -> bool:
    """False only for a plan that reads and breaks the record's rules; no plan, or a rationale, says nothing."""
    try:
        parsed = parse_plan(plan) if plan else None
    except PlanError:
        return True
    if parsed is None:
        return True
    check = check_plan(parsed, record)
    return check.semantic and check.spatial is not False


def _grid_box(box: tuple, width: int, height: int) -> Box:
    x0, y0, x1, y1 = (round(v) for v in box)
    gx0, _, gx1, _ = to_grid((x0, 0, x1, 0), width)
    _, gy0, _, gy1 = to_grid((0, y0, 0, y1), height)
    return (gx0, gy0, gx1, gy1)


def _planned_box(plan: str | None, phrase: str) -> Box | None:
    try:
        objects = parse_plan(plan).objects if plan else ()
    except PlanError:
        return None
    return next((o.box for o in objects if o.phrase == phrase), None)


def _centre_distance(a: Box, b: Box) -> float:
    return ((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2) ** 2 + ((a[1] + a[3]) / 2 - (b[1] + b[3]) / 2) ** 2
