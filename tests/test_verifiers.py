"""Verifiers over a tiny world policy and a scripted judge: the pick, the pruning, its replay, the fall back."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_models import tiny_policy

from thinkdraw.engine.settings import SamplingSettings
from thinkdraw.errors import ThinkdrawError
from thinkdraw.verifiers.settings import VerifierSettings
from thinkdraw.verifiers.verify import check_steps, replay, verify

torch.set_num_threads(1)
SAMPLING = SamplingSettings(cfg_scale=2.0, max_think_tokens=6)
PROMPTS = ["a photo of a red circle", "a photo of two blue squares"]


class PixelJudge:
    """P(yes) from the pixels, so every answer is a fixed function of the image: outcome/process from the mean
    red level; clarity once `clear_at` of the image is drawn; potential from the partial image's mean's 2nd digit."""

    def __init__(self, clear_at: float = 0.4, potential=None):
        self.clear_at, self.potential_of = clear_at, potential or (lambda m: m)
        self.asked: list[tuple[str, int]] = []
        self.plans: list[tuple[str, str, str | None]] = []  # (question, prompt, plan) of every query

    @staticmethod
    def mean(image) -> float:
        return float(np.asarray(image, dtype=np.float64)[..., 0].mean() / 255)

    def yes(self, queries, question="outcome"):
        self.asked += [(question, round(100 * q.progress)) for q in queries]
        self.plans += [(question, q.prompt, q.plan) for q in queries]
        if question == "clarity":
            return [1.0 if q.progress >= self.clear_at else 0.0 for q in queries]
        if question == "potential":
            return [self.potential_of(100 * self.mean(q.image) % 1) for q in queries]
        return [self.mean(q.image) for q in queries]


@pytest.fixture(scope="module")
def policy():
    return tiny_policy()


def test_check_steps_spread_over_the_image_and_never_at_the_end():
    assert check_steps(64, 3) == [16, 32, 47]
    assert check_steps(256, 8)[-1] < 256 and len(check_steps(256, 8)) == 8
    assert check_steps(4, 8) == [1, 2, 3]


def test_best_of_n_picks_the_judges_favourite_among_plain_samples(policy):
    settings = VerifierSettings(candidates=4)
    picks = verify("bon", policy, PixelJudge(), PROMPTS, settings, SAMPLING, seed=3)
    plain = policy.generate(PROMPTS, n=4, seed=3, settings=SAMPLING)
    for g, pick in enumerate(picks):
        mine = plain[4 * g : 4 * g + 4]
        assert [torch.equal(a.image_tokens, b.image_tokens) for a, b in zip(pick.candidates, mine, strict=True)] == [
            True
        ] * 4
        expected = [PixelJudge.mean(c.image) for c in mine]
        assert pick.scores == pytest.approx(expected)
        assert pick.chosen == int(np.argmax(expected))
        assert pick.image_tokens == 4 * policy.num_image_tokens


def test_partial_images_are_judged_with_the_plan_they_follow(policy):
    """The engine tells the verifier each row's plan before it draws, so every partial-image question carries the
    plan of its own row, live and in replay."""
    settings = VerifierSettings(candidates=3, checks=2)
    live = PixelJudge(clear_at=0.9)
    picks = verify("parm", policy, live, PROMPTS, settings, SAMPLING, seed=2)
    planned = {(c.prompt, c.plan) for p in picks for c in p.candidates}
    partial = [(prompt, plan) for question, prompt, plan in live.plans if question == "clarity"]
    assert len(partial) == 2 * 6 and set(partial) == planned
    replayed = PixelJudge(clear_at=0.9)
    replay("parm", policy, replayed, [c for p in picks for c in p.candidates], settings)
    assert replayed.plans == live.plans


def test_parm_prunes_for_real_and_its_replay_agrees(policy):
    settings = VerifierSettings(candidates=6, checks=4)
    prune_half = lambda m: float(m >= 0.5)  # noqa: E731
    judge = PixelJudge(potential=prune_half)
    picks = verify("parm", policy, judge, PROMPTS, settings, SAMPLING, seed=1)
    stopped = [c.drawn for p in picks for c in p.candidates if c.drawn is not None]
    assert stopped, "the scripted judge should stop some paths"
    N = policy.num_image_tokens
    for pick in picks:
        assert pick.image_tokens == sum(N if c.drawn is None else c.drawn for c in pick.candidates) < 6 * N
        assert all((s is None) == (c.drawn is not None) for s, c in zip(pick.scores, pick.candidates, strict=True))
        assert pick.candidates[pick.chosen].drawn is None
    # each path was asked for potential exactly once, at its first clear step (progress >= 40%)
    first_clear = min(k for k in check_steps(N, 4) if k / N >= 0.4)
    assert {p for q, p in judge.asked if q == "potential"} == {round(100 * first_clear / N)}
    assert sum(q == "potential" for q, _ in judge.asked) == 12
    full = policy.generate(PROMPTS, n=6, seed=1, settings=SAMPLING)
    replayed = replay("parm", policy, PixelJudge(potential=prune_half), full, settings)
    for a, b in zip(picks, replayed, strict=True):
        assert (a.chosen, a.image_tokens, a.events) == (b.chosen, b.image_tokens, b.events)
        assert a.scores == pytest.approx(b.scores)
        assert [c.drawn for c in a.candidates] == [c.drawn for c in b.candidates]
        for c, d in zip(a.candidates, b.candidates, strict=True):
            n = N if c.drawn is None else c.drawn
            assert torch.equal(c.image_tokens[:n], d.image_tokens[:n])


def test_parm_stops_no_path_when_it_would_stop_them_all(policy):
    settings = VerifierSettings(candidates=3, checks=4)
    hopeless = PixelJudge(potential=lambda m: 0.0)
    (pick,) = verify("parm", policy, hopeless, PROMPTS[:1], settings, SAMPLING)
    (bon,) = verify("bon", policy, PixelJudge(), PROMPTS[:1], settings, SAMPLING)
    assert all(c.drawn is None for c in pick.candidates)
    assert pick.chosen == bon.chosen and pick.image_tokens == 3 * policy.num_image_tokens
    assert pick.events and "none stopped" in pick.events[0]


def test_parm_potential_threshold_decides_which_clear_paths_stop(policy):
    full = policy.generate(PROMPTS, n=6, seed=1, settings=SAMPLING)
    N = policy.num_image_tokens
    first_clear = min(k for k in check_steps(N, 4) if k / N >= 0.4)
    potential = [
        100 * PixelJudge.mean(policy.decode_partial(c.image_tokens[None, :first_clear], first_clear)[0]) % 1
        for c in full
    ]
    stopped = {}
    for bar in (0.3, 0.7):
        settings = VerifierSettings(candidates=6, checks=4, potential=bar)
        picks = replay("parm", policy, PixelJudge(), full, settings)
        drawn = [c.drawn for p in picks for c in p.candidates]
        stopped[bar] = {i for i, d in enumerate(drawn) if d is not None}
        for g in range(len(PROMPTS)):  # a path stops at its first clear step iff its potential is under the bar
            mine = range(6 * g, 6 * g + 6)
            under = {i for i in mine if potential[i] < bar}
            assert stopped[bar] & set(mine) == (under if len(under) < 6 else set())
            assert all(drawn[i] == first_clear for i in under if len(under) < 6)
    assert stopped[0.3] < stopped[0.7]


def test_prm_keeps_the_better_half_at_each_check(policy):
    settings = VerifierSettings(candidates=8, checks=2, keep=0.5)
    judge = PixelJudge()
    (pick,) = verify("prm", policy, judge, PROMPTS[:1], settings, SAMPLING, seed=2)
    finished = [c for c in pick.candidates if c.drawn is None]
    assert len(finished) == math.ceil(math.ceil(8 * 0.5) * 0.5) == 2
    assert {q for q, _ in judge.asked} == {"process"}
    full = policy.generate(PROMPTS[:1], n=8, seed=2, settings=SAMPLING)
    (again,) = replay("prm", policy, PixelJudge(), full, settings)
    assert (again.chosen, again.image_tokens) == (pick.chosen, pick.image_tokens)


def test_bad_verifier_and_settings():
    with pytest.raises(ThinkdrawError, match="unknown verifier 'beam'"):
        verify("beam", None, None, PROMPTS, VerifierSettings())
    with pytest.raises(ThinkdrawError, match="at least 1"):
        VerifierSettings(candidates=0)
    with pytest.raises(ThinkdrawError, match="--keep"):
        VerifierSettings(keep=0)
    with pytest.raises(ThinkdrawError, match="--potential"):
        VerifierSettings(potential=1.0)
