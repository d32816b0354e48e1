"""Rewards: plain callables over a batch of samples, each answered with a value in [0, 1] or None plus the reason.

    reward(samples) -> [Score(value, reason), ...]      (one per sample, in order)

None means the reward could not be given (the judge is down, its answer unreadable, the reward does not apply
to this sample): a trainer leaves such a sample out of its group baseline, it never scores it 0. A plan that
does not parse is the policy's own mistake and gets 0, with the parse error as the reason.

The rewards of the papers:
    GoT-R1:       sem (the plan names what the prompt asks), spa (the plan's boxes, drawn on a canvas, are placed
                  as the prompt says), ri (IoU of planned and grounded boxes), pi (the image shows the prompt);
                  "got" = pi * (sem + spa) / 2 * ri
    ReasonGen-R1: binary (1 when the judge says every requirement is met, else 0)
    Flow-GRPO:    geneval (GenEval's rules over any Detector)
    ours:         plan (GenEval's rules on the plan itself: sem and spa computed exactly from a GenEval-style
                  record, no judge and no image); layout (the share of the environment's layout rules the plan's
                  boxes keep: a plan can be right and still not be one the drawer can draw)
Composed by a spec string (build_reward): "got", "binary", "0.7*pi+0.3*geneval", "pi*ri", "plan*layout".
The rewards that read the reasoning alone (PLAN_ONLY) can train a plan without drawing its image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image

from thinkdraw.errors import ThinkdrawError
from thinkdraw.evaluator.detection import Detector
from thinkdraw.evaluator.plans import check_plan
from thinkdraw.evaluator.rules import judge_image
from thinkdraw.judges.base import Judge, JudgeError, Query
from thinkdraw.plan import Plan, PlanError, draw_plan, parse_plan


class RewardError(ThinkdrawError):
    """A reward spec or setting that cannot be built."""


@dataclass(frozen=True)
class Sample:
    """What a reward looks at: the GenEval-style record (its "prompt" at least), the image, the reasoning."""

    metadata: dict
    image: Image.Image | None = None
    reasoning: str | None = None  # the plan or rationale the policy wrote; None with --no-think
    reasoning_format: str = "plan"  # "plan" (boxes) or "rationale" (plain sentences)

    @property
    def prompt(self) -> str:
        return self.metadata["prompt"]


@dataclass(frozen=True)
class Score:
    value: float | None
    reason: str = ""


Reward = Callable[[Sequence[Sample]], list[Score]]
# An environment's layout rules: (the share of its rules a plan's boxes keep, in [0, 1]; the rules it breaks)
LayoutRules = Callable[[Plan], tuple[float, list[str]]]


def _answers(queries: list, answer: Callable[[list], list]) -> list:
    """The judge's answers to the queries, the batch at once; if the batch fails, one by one, so one unreadable
    answer costs only its own query. A query the judge cannot answer gets its JudgeError in its place."""
    try:
        return list(answer(queries))
    except JudgeError:
        pass
    found = []
    for query in queries:
        try:
            found.append(answer([query])[0])
        except JudgeError as e:
            found.append(e)
    return found


def _judged(samples: Sequence[Sample], query_of, answer, value_of) -> list[Score]:
    """query_of(sample) -> a Query, or the Score already decided without the judge; value_of(answer) -> Score."""
    built = [query_of(s) for s in samples]
    asked = [b for b in built if isinstance(b, Query)]
    answers = iter(_answers(asked, answer)) if asked else iter(())
    scores = []
    for b in built:
        if not isinstance(b, Query):
            scores.append(b)
            continue
        found = next(answers)
        scores.append(
            Score(None, f"the judge could not answer: {found}") if isinstance(found, JudgeError) else value_of(found)
        )
    return scores


def _needs_image(sample: Sample) -> Score | None:
    return Score(None, "no image") if sample.image is None else None


def _plan_of(sample: Sample):
    """The parsed plan, or the Score that stands for its absence (None: not written; 0: it does not parse)."""
    if sample.reasoning is None or sample.reasoning_format != "plan":
        return Score(None, "no plan was written")
    try:
        return parse_plan(sample.reasoning)
    except PlanError as e:
        return Score(0.0, f"the plan does not parse: {e}")


JUDGED_BY = ("yes", "score")  # P(yes) of a yes/no question, or a 0-10 rating / 10 (GoT-R1's choice)


def _judged_reward(judge: Judge, question: str, query_of, judged_by: str) -> Reward:
    if judged_by not in JUDGED_BY:
        raise RewardError(f"judged_by {judged_by!r}: choose one of {', '.join(JUDGED_BY)}")

    def reward(samples: Sequence[Sample]) -> list[Score]:
        if judged_by == "yes":
            answer = lambda queries: judge.yes(queries, question)  # noqa: E731
            return _judged(samples, query_of, answer, lambda p: Score(p, f"P(yes) to the {question} question"))
        answer = lambda queries: judge.score(queries, question)  # noqa: E731
        return _judged(samples, query_of, answer, lambda v: Score(v / 10, f"{v:g}/10 on the {question} question"))

    return reward


def prompt_image_reward(judge: Judge, judged_by: str = "yes") -> Reward:
    """GoT-R1's R_PI: does the image show what the prompt asks for."""
    query = lambda s: _needs_image(s) or Query(s.prompt, s.image, s.reasoning)  # noqa: E731
    return _judged_reward(judge, "outcome", query, judged_by)


def semantic_reward(judge: Judge, judged_by: str = "yes") -> Reward:
    """GoT-R1's R_sem: does the reasoning name every object the prompt asks for (text only)."""

    def query(s: Sample):
        if s.reasoning is None:
            return Score(None, "no reasoning was written")
        return Query(s.prompt, None, s.reasoning)

    return _judged_reward(judge, "semantic", query, judged_by)


def spatial_reward(judge: Judge, judged_by: str = "yes", canvas: int = 256) -> Reward:
    """GoT-R1's R_spa: the plan's boxes drawn on a blank canvas, judged for their placement."""

    def query(s: Sample):
        plan = _plan_of(s)
        if isinstance(plan, Score):
            return plan
        return Query(s.prompt, draw_plan(plan, canvas), s.reasoning)

    return _judged_reward(judge, "spatial", query, judged_by)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def region_reward(judge: Judge) -> Reward:
    """GoT-R1's R_RI: for each planned object, the judge grounds its phrase in the image; the reward is the
    mean IoU of planned and grounded boxes (an object the judge does not find counts 0)."""

    def reward(samples: Sequence[Sample]) -> list[Score]:
        plans = [_needs_image(s) or _plan_of(s) for s in samples]
        asked = [
            (i, Query(s.prompt, s.image, s.reasoning), obj)
            for i, (s, plan) in enumerate(zip(samples, plans, strict=True))
            if not isinstance(plan, Score)
            for obj in plan.objects
        ]
        answer = lambda rows: judge.ground([q for _, q, _ in rows], [o.phrase for _, _, o in rows])  # noqa: E731
        ious: dict[int, list[float]] = {}
        failed: dict[int, str] = {}
        for (i, _, obj), found in zip(asked, _answers(asked, answer) if asked else [], strict=True):
            if isinstance(found, JudgeError):
                failed.setdefault(i, f"the judge could not ground {obj.phrase!r}: {found}")
            else:
                ious.setdefault(i, []).append(0.0 if found is None else iou(obj.box, found))
        scores = []
        for i, plan in enumerate(plans):
            if isinstance(plan, Score):
                scores.append(plan)
            elif i in failed:
                scores.append(Score(None, failed[i]))
            else:
                scores.append(
                    Score(sum(ious[i]) / len(ious[i]), f"mean IoU of {len(ious[i])} planned and grounded boxes")
                )
        return scores

    return reward


def binary_reward(judge: Judge, judged_by: str = "yes", threshold: float = 0.5) -> Reward:
    """ReasonGen-R1's reward: 1 when the judge says the image meets every requirement of the prompt, else 0
    (P(yes) >= threshold; the judge's own word when it answers as text)."""
    outcome = prompt_image_reward(judge, judged_by)

    def reward(samples: Sequence[Sample]) -> list[Score]:
        return [
            s if s.value is None else Score(float(s.value >= threshold), f"P(yes) {s.value:.3f} vs {threshold}")
            for s in outcome(samples)
        ]

    return reward


def geneval_reward(detector: Detector) -> Reward:
    """GenEval's rules over a detector (Flow-GRPO's reward): 1 when the image passes, else 0 with the failures."""

    def reward(samples: Sequence[Sample]) -> list[Score]:
        scores = []
        for s in samples:
            if s.image is None or "include" not in s.metadata:
                scores.append(Score(None, "no image" if s.image is None else "the record has no GenEval clauses"))
                continue
            verdict = judge_image(s.metadata, s.image, detector)
            scores.append(Score(float(verdict.correct), verdict.reason.replace("\n", "; ") or "passes GenEval's rules"))
        return scores

    return reward


def plan_reward() -> Reward:
    """GenEval's rules on the plan, read as a perfect detector's output (evaluator.plans.check_plan): 1 when the
    planned objects, colours, counts and places meet the record's clauses, else 0 with the failures. GoT-R1's
    R_sem and R_spa made exact for GenEval-style records; it needs no image."""

    def score(plan: Plan, metadata: dict) -> Score:
        check = check_plan(plan, metadata)
        right = check.semantic and check.spatial is not False
        return Score(float(right), "; ".join(check.failures) or "the plan meets the prompt")

    return _per_plan(score, needs_clauses=True)


def layout_reward(rules: LayoutRules) -> Reward:
    """The share of the environment's layout rules the plan's boxes keep (the shapes world: square boxes of a size
    it draws, apart from each other). "plan*layout" asks for a plan that is right and that the drawer can draw."""

    def score(plan: Plan, metadata: dict) -> Score:
        share, broken = rules(plan)
        return Score(share, "; ".join(broken) or "every box keeps the layout rules")

    return _per_plan(score)


def _per_plan(score: Callable[[Plan, dict], Score], needs_clauses: bool = False) -> Reward:
    """A reward that reads each sample's parsed plan (and its record); no plan or an unreadable one as _plan_of,
    and with `needs_clauses` None for a record without GenEval clauses (the reward does not apply)."""
    no_clauses = Score(None, "the record has no GenEval clauses")

    def reward(samples: Sequence[Sample]) -> list[Score]:
        plans = [no_clauses if needs_clauses and "include" not in s.metadata else _plan_of(s) for s in samples]
        return [p if isinstance(p, Score) else score(p, s.metadata) for p, s in zip(plans, samples, strict=True)]

    return reward


def product(rewards: Sequence[tuple[str, Reward]]) -> Reward:
    """The product of named rewards (GoT-R1's composition); None when any factor is None."""
    return _combine(rewards, [1.0] * len(rewards), multiply=True)


def weighted_sum(rewards: Sequence[tuple[str, Reward]], weights: Sequence[float]) -> Reward:
    """sum(w_i * r_i) / sum(w_i); None when any term is None."""
    return _combine(rewards, list(weights), multiply=False)


def _combine(rewards, weights, multiply: bool) -> Reward:
    total = sum(weights)

    def reward(samples: Sequence[Sample]) -> list[Score]:
        columns = [r(samples) for _, r in rewards]
        scores = []
        for row in zip(*columns, strict=True):
            missing = [f"{name}: {s.reason}" for (name, _), s in zip(rewards, row, strict=True) if s.value is None]
            if missing:
                scores.append(Score(None, "; ".join(missing)))
                continue
            value = 1.0
            if multiply:
                for s in row:
                    value *= s.value
            else:
                value = sum(w * s.value for w, s in zip(weights, row, strict=True)) / total
            parts = ", ".join(f"{name} {s.value:.3f}" for (name, _), s in zip(rewards, row, strict=True))
            scores.append(Score(value, parts))
        return scores

    return reward


JUDGED = {
    "pi": prompt_image_reward,
    "sem": semantic_reward,
    "spa": spatial_reward,
    "ri": region_reward,
    "binary": binary_reward,
}
NAMES = (*JUDGED, "geneval", "got", "plan", "layout")
PLAN_ONLY = ("plan", "layout", "sem", "spa")  # the rewards that read the reasoning alone, no image


def spec_names(spec: str) -> set[str]:
    """The reward names a spec uses ("0.7*pi+0.3*geneval" -> {pi, geneval}); weights are left out."""
    factors = {f.strip() for term in spec.split("+") for f in term.split("*")}
    return {f for f in factors if f and not _is_number(f)}


def build_reward(
    spec: str,
    judge: Judge | None = None,
    detector: Detector | None = None,
    judged_by: str = "yes",
    layout: LayoutRules | None = None,
) -> Reward:
    """A reward from its spec: a name (NAMES), a product "a*b", or a weighted sum "0.7*pi+0.3*geneval".

    "got" is GoT-R1's pi * (sem + spa) / 2 * ri. Judged rewards need `judge`, "geneval" needs `detector`,
    "layout" the environment's `layout` rules;
    judged_by: the judge's P(yes) ("yes") or its 0-10 rating ("score", GoT-R1's; not for ri).
    """

    def named(name: str) -> Reward:
        if name == "got":
            sem_spa = weighted_sum([("sem", named("sem")), ("spa", named("spa"))], [1.0, 1.0])
            return product([("pi", named("pi")), ("(sem+spa)/2", sem_spa), ("ri", named("ri"))])
        if name == "plan":
            return plan_reward()
        if name == "layout":
            if layout is None:
                raise RewardError("the layout reward needs the environment's layout rules")
            return layout_reward(layout)
        if name == "geneval":
            if detector is None:
                raise RewardError("the geneval reward needs a detector")
            return geneval_reward(detector)
        if name not in JUDGED:
            raise RewardError(f"unknown reward {name!r} in {spec!r}: choose from {', '.join(NAMES)}")
        if judge is None:
            raise RewardError(f"the {name} reward needs a judge (--judge)")
        return region_reward(judge) if name == "ri" else JUDGED[name](judge, judged_by)

    terms = [t.strip() for t in spec.split("+")]
    if not spec.strip() or not all(terms):
        raise RewardError(f"reward spec {spec!r}: write a name, a*b, or w1*a+w2*b")
    summed: list[tuple[str, Reward]] = []
    weights: list[float] = []
    for term in terms:
        factors = [f.strip() for f in term.split("*")]
        weight = 1.0
        if len(factors) > 1 and _is_number(factors[0]):
            weight = float(factors.pop(0))
            if weight <= 0:
                raise RewardError(f"reward spec {spec!r}: weights must be positive")
        if not all(factors):
            raise RewardError(f"reward spec {spec!r}: write a name, a*b, or w1*a+w2*b")
        if len(factors) == 1:
            summed.append((factors[0], named(factors[0])))
        else:
            summed.append((term, product([(f, named(f)) for f in factors])))
        weights.append(weight)
    if len(summed) == 1 and weights[0] == 1.0:
        return summed[0][1]
    return weighted_sum(summed, weights)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
