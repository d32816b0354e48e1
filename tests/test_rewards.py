"""Rewards over a scripted judge: the papers' formulas, None (never 0) when the judge cannot answer, specs."""

from __future__ import annotations

import random

import pytest
from PIL import Image

from thinkdraw.judges.base import JudgeError, Query
from thinkdraw.rewards import (
    RewardError,
    Sample,
    binary_reward,
    build_reward,
    geneval_reward,
    iou,
    plan_reward,
    prompt_image_reward,
    region_reward,
    semantic_reward,
    spatial_reward,
    spec_names,
)
from thinkdraw.world.detector import WorldDetector
from thinkdraw.world.layout import solve_layout
from thinkdraw.world.render import render_image


class ScriptedJudge:
    """P(yes) per (question, prompt), boxes per phrase; prompts containing "broken" make the judge fail. No
    feedback: no reward asks for it."""

    def __init__(self, yes: dict[tuple[str, str], float], boxes: dict[str, tuple | None] | None = None):
        self.answers, self.boxes, self.calls = yes, boxes or {}, []

    def _check(self, queries):
        self.calls.append(len(queries))
        for q in queries:
            if "broken" in q.prompt:
                raise JudgeError("the answer was not yes or no")

    def yes(self, queries, question="outcome"):
        self._check(queries)
        return [self.answers[(question, q.prompt)] for q in queries]

    def score(self, queries, question="outcome"):
        self._check(queries)
        return [10 * self.answers[(question, q.prompt)] for q in queries]

    def ground(self, queries, phrases):
        self._check(queries)
        return [self.boxes[p] for p in phrases]


IMAGE = Image.new("RGB", (64, 64), (128, 128, 128))
PLAN = "red circle (100,100),(300,300); blue square (600,600),(900,900)"


def sample(prompt: str, reasoning: str | None = PLAN, image=IMAGE, **metadata) -> Sample:
    return Sample({"prompt": prompt, **metadata}, image, reasoning)


def test_prompt_image_reward_is_the_judges_p_yes_and_none_when_it_cannot_answer():
    judge = ScriptedJudge({("outcome", "a"): 0.8, ("outcome", "b"): 0.1})
    scores = prompt_image_reward(judge)([sample("a"), sample("broken"), sample("b"), sample("c", image=None)])
    assert [s.value for s in scores] == [0.8, None, 0.1, None]
    assert "could not answer: the answer was not yes or no" in scores[1].reason
    assert scores[3].reason == "no image"
    # the batch of three was tried at once, then one by one: one bad answer costs only its own sample
    assert judge.calls == [3, 1, 1, 1]


def test_semantic_reward_judges_the_text_and_spatial_the_drawn_boxes():
    seen = []

    class Recording(ScriptedJudge):
        def yes(self, queries, question="outcome"):
            seen.extend((question, q) for q in queries)
            return super().yes(queries, question)

    judge = Recording({("semantic", "a"): 0.9, ("spatial", "a"): 0.4})
    assert semantic_reward(judge)([sample("a")])[0].value == 0.9
    assert spatial_reward(judge)([sample("a")])[0].value == 0.4
    (q1, sem), (q2, spa) = seen
    assert (q1, q2) == ("semantic", "spatial")
    assert sem.image is None and sem.plan == PLAN
    # the spatial question sees the plan's boxes on a canvas: the red box's inside is reddish, the rest grey
    canvas = spa.image.convert("RGB")
    r, g, b = canvas.getpixel((canvas.width * 2 // 10, canvas.height * 2 // 10))
    assert r > g + 40 and r > b + 40
    assert canvas.getpixel((canvas.width // 2, canvas.height // 10)) == (128, 128, 128)


def test_a_plan_that_does_not_parse_scores_0_and_no_plan_is_none():
    judge = ScriptedJudge({})
    scores = spatial_reward(judge)([sample("a", reasoning="a red circle somewhere"), sample("a", reasoning=None)])
    assert scores[0].value == 0.0 and scores[0].reason.startswith("the plan does not parse")
    assert scores[1].value is None and scores[1].reason == "no plan was written"
    assert judge.calls == []  # neither needed the judge
    rationale = Sample({"prompt": "a"}, IMAGE, "one red circle", "rationale")
    assert spatial_reward(judge)([rationale])[0].value is None


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


def test_region_reward_is_the_mean_iou_of_planned_and_grounded_boxes():
    judge = ScriptedJudge({}, {"red circle": (100, 100, 300, 300), "blue square": (750, 600, 1000, 900)})
    (score,) = region_reward(judge)([sample("a")])
    assert score.value == pytest.approx((1.0 + iou((600, 600, 900, 900), (750, 600, 1000, 900))) / 2)
    judge.boxes["blue square"] = None  # not found: that object counts 0
    assert region_reward(judge)([sample("a")])[0].value == pytest.approx(0.5)
    assert region_reward(judge)([sample("broken")])[0].value is None


def test_got_reward_is_pi_times_mean_of_sem_and_spa_times_ri():
    yes = {("outcome", "a"): 0.8, ("semantic", "a"): 0.9, ("spatial", "a"): 0.5}
    judge = ScriptedJudge(yes, {"red circle": (100, 100, 300, 300), "blue square": (600, 600, 900, 900)})
    (score,) = build_reward("got", judge)([sample("a")])
    assert score.value == pytest.approx(0.8 * (0.9 + 0.5) / 2 * 1.0)
    yes[("outcome", "a")] = 0.0
    assert build_reward("got", judge)([sample("a")])[0].value == 0.0
    # any factor that cannot be given makes the product None, with that factor's reason
    (missing,) = build_reward("got", judge)([sample("a", reasoning=None)])
    assert missing.value is None and "no plan was written" in missing.reason


def test_binary_reward_thresholds_the_outcome_question():
    judge = ScriptedJudge({("outcome", "a"): 0.7, ("outcome", "b"): 0.3})
    assert [s.value for s in binary_reward(judge)([sample("a"), sample("b"), sample("broken")])] == [1.0, 0.0, None]


def test_geneval_reward_runs_the_rules_over_a_detector():
    record = {"tag": "two_object", "include": [{"class": "circle", "count": 1}, {"class": "star", "count": 1}]}
    good = render_image(solve_layout({**record, "prompt": "x"}, random.Random(0)))
    reward = geneval_reward(WorldDetector())
    scores = reward([sample("x", image=good, **record), sample("x", image=IMAGE, **record), sample("x")])
    assert [s.value for s in scores] == [1.0, 0.0, None]
    assert "expected circle>=1, found 0" in scores[1].reason
    assert scores[2].reason == "the record has no GenEval clauses"


def test_plan_reward_applies_the_rules_to_the_plan_itself():
    record = {
        "tag": "position",
        "include": [{"class": "cross", "count": 1}, {"class": "diamond", "count": 1, "position": ["left of", 0]}],
    }
    left = "diamond (100,400),(300,600); cross (600,400),(800,600)"
    right = "diamond (600,400),(800,600); cross (100,400),(300,600)"
    missing = "diamond (100,400),(300,600)"
    rows = [left, right, missing, "a diamond somewhere", None]
    scores = plan_reward()([sample("x", reasoning=r, image=None, **record) for r in rows])
    assert [s.value for s in scores] == [1.0, 0.0, 0.0, 0.0, None]
    assert scores[0].reason == "the plan meets the prompt"
    assert "is not left of" in scores[1].reason and "expected cross>=1, found 0" in scores[2].reason
    assert scores[3].reason.startswith("the plan does not parse") and scores[4].reason == "no plan was written"
    colour = {"tag": "colors", "include": [{"class": "star", "count": 1, "color": "blue"}]}
    blue, red = "blue star (100,100),(300,300)", "red star (100,100),(300,300)"
    assert [s.value for s in build_reward("plan")([sample("x", blue, **colour), sample("x", red, **colour)])] == [
        1.0,
        0.0,
    ]
    assert plan_reward()([sample("x", left)])[0].reason == "the record has no GenEval clauses"


def test_layout_reward_reads_the_environment_rules_and_multiplies_with_plan():
    record = {"tag": "single_object", "include": [{"class": "star", "count": 1}]}
    seen = []

    def rules(plan):
        seen.append(plan.objects[0].box)
        return (0.5, ["box 1 is not square"]) if plan.objects[0].box[3] == 301 else (1.0, [])

    square, oblong, cross = "star (100,100),(300,300)", "star (100,100),(300,301)", "cross (100,100),(300,300)"
    rows = [sample("x", r, image=None, **record) for r in (square, oblong, cross, "no plan here", None)]
    scores = build_reward("plan*layout", layout=rules)(rows)
    assert [s.value for s in scores] == [1.0, 0.5, 0.0, 0.0, None]
    assert scores[1].reason == "plan 1.000, layout 0.500"
    assert seen == [(100, 100, 300, 300), (100, 100, 300, 301), (100, 100, 300, 300)]  # every plan that parses
    alone = build_reward("layout", layout=rules)(rows[1:2])[0]
    assert (alone.value, alone.reason) == (0.5, "box 1 is not square")
    with pytest.raises(RewardError, match="needs the environment's layout rules"):
        build_reward("plan*layout")


def test_spec_names():
    assert spec_names("0.7*pi+0.3*geneval") == {"pi", "geneval"}
    assert spec_names("plan*sem + spa") == {"plan", "sem", "spa"}


def test_weighted_sums_and_specs():
    judge = ScriptedJudge({("outcome", "a"): 0.8, ("semantic", "a"): 0.2})
    assert build_reward("0.75*pi+0.25*sem", judge)([sample("a")])[0].value == pytest.approx(0.65)
    assert build_reward("pi*sem", judge)([sample("a")])[0].value == pytest.approx(0.16)
    assert build_reward("3*pi+1*pi*sem", judge)([sample("a")])[0].value == pytest.approx((3 * 0.8 + 0.16) / 4)
    for bad, message in [
        ("", "write a name"),
        ("pi+", "write a name"),
        ("clip", "unknown reward 'clip'"),
        ("-1*pi+pi", "weights must be positive"),
    ]:
        with pytest.raises(RewardError, match=message):
            build_reward(bad, judge)
    with pytest.raises(RewardError, match="needs a judge"):
        build_reward("pi")
    with pytest.raises(RewardError, match="needs a detector"):
        build_reward("geneval", judge)


def test_queries_carry_prompt_image_and_plan():
    got = []

    class Spy(ScriptedJudge):
        def yes(self, queries, question="outcome"):
            got.extend(queries)
            return [0.5] * len(queries)

    prompt_image_reward(Spy({}))([sample("a")])
    assert got == [Query("a", IMAGE, PLAN)]


def test_rewards_judged_by_a_0_to_10_rating_as_in_got_r1():
    yes = {("outcome", "a"): 0.7, ("semantic", "a"): 0.9, ("spatial", "a"): 0.5}
    judge = ScriptedJudge(yes, {"red circle": (100, 100, 300, 300), "blue square": (600, 600, 900, 900)})
    (score,) = build_reward("got", judge, judged_by="score")([sample("a")])
    assert score.value == pytest.approx(0.7 * (0.9 + 0.5) / 2)
    assert "7/10 on the outcome question" in prompt_image_reward(judge, "score")([sample("a")])[0].reason
    with pytest.raises(RewardError, match="judged_by 'votes'"):
        build_reward("pi", judge, judged_by="votes")
