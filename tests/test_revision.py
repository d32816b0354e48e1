"""Second tries (PARM++): the revise context, the world's revise tokens, their SFT examples, the parm++ verifier."""

from __future__ import annotations

import random

import pytest
import torch
from janus_pro_tiny import janus_pro_tokenizer
from tiny_models import tiny_policy

from thinkdraw.errors import ThinkdrawError
from thinkdraw.evaluator.plans import check_plan
from thinkdraw.evaluator.rules import judge
from thinkdraw.plan import parse_plan
from thinkdraw.policy.formats import REVISION_TEXT, ChatFormat, Revision
from thinkdraw.policy.model import untie_text_head
from thinkdraw.verifiers.settings import VerifierSettings
from thinkdraw.verifiers.verify import replay, verify
from thinkdraw.world.data import ERRORS, feedback_sentence, revision_example, with_error
from thinkdraw.world.layout import as_detections, solve_layout
from thinkdraw.world.model import with_revision
from thinkdraw.world.splits import load_split

torch.set_num_threads(1)
REVISION = Revision("red circle (100,100),(300,300)", "There is one circle, not two.")


@pytest.fixture(scope="module")
def policy():
    p = tiny_policy()
    untie_text_head(p.model)
    return with_revision(p)


def test_the_revise_context_holds_the_earlier_plan_and_the_feedback(policy):
    ids = policy.encode("a photo of two red circles", True, "plan", REVISION)
    tokens = policy.tokenizer.convert_ids_to_tokens(ids)
    assert tokens[:7] == ["<bos>", "a", "photo", "of", "two", "red", "circles"]
    assert tokens[7] == "<revise>" and tokens[-1] == "<think>"
    feedback = tokens.index("<feedback>")
    assert tokens[feedback + 1 :] == ["there", "is", "one", "circle", ",", "not", "two", "<think>"]
    assert policy.encode("a photo of two red circles", True) == ids[:7] + [ids[-1]]  # a first try is as before
    with pytest.raises(ThinkdrawError, match="needs thinking"):
        policy.encode("a photo of a circle", False, "plan", REVISION)
    with pytest.raises(ThinkdrawError, match="does not know 'maybe'"):
        policy.encode("a photo of a circle", True, "plan", Revision("circle (1,1),(9,9)", "maybe"))
    with pytest.raises(ThinkdrawError, match="no revise token"):
        tiny_policy().encode("a photo of a circle", True, "plan", REVISION)


def test_a_chat_model_is_told_of_its_first_try():
    tokenizer = janus_pro_tokenizer()
    chat = ChatFormat(tokenizer)
    first = tokenizer.decode(chat.context("a red circle", True))
    second = tokenizer.decode(chat.context("a red circle", True, "plan", REVISION))
    told = REVISION_TEXT.format(plan=REVISION.reasoning, feedback=REVISION.feedback)
    assert told not in first and told in second
    assert second.replace("\n" + told, "") == first
    with pytest.raises(ThinkdrawError, match="needs thinking"):
        chat.context("a red circle", False, "plan", REVISION)


def test_with_revision_keeps_every_old_id_and_row():
    p = tiny_policy()
    untie_text_head(p.model)
    before_in = p.model.get_input_embeddings().weight.detach().clone()
    before_out = p.model.lm_head.weight.detach().clone()
    q = with_revision(p)
    n = before_in.shape[0]
    assert torch.equal(q.model.get_input_embeddings().weight[:n], before_in)
    assert torch.equal(q.model.lm_head.weight[:n], before_out)
    assert all(q.tokenizer.get_vocab()[t] == i for t, i in p.tokenizer.get_vocab().items())
    assert q.format.revise == n and q.format.feedback == n + 1
    assert with_revision(q) is q


def test_every_feedback_sentence_is_in_the_world_words(policy):
    rng = random.Random(0)
    for record in load_split("val"):
        right = solve_layout(record, rng)
        for kind in ERRORS:
            wrong = with_error(right, kind, rng)
            if wrong is None:
                continue
            sentence = feedback_sentence(record, judge(record, as_detections(wrong)))
            if sentence != "nothing":
                policy.encode(record["prompt"], True, "plan", Revision("circle (1,1),(9,9)", sentence))


def test_revision_examples_fix_a_flawed_plan():
    rng = random.Random(1)
    made = 0
    for record in load_split("val")[:60]:
        example = revision_example(record, rng)
        if example is None:
            continue
        made += 1
        flawed = check_plan(parse_plan(example.revision.reasoning), record)
        fixed = check_plan(parse_plan(example.reasoning), record)
        assert not (flawed.semantic and flawed.spatial is not False)
        assert fixed.semantic and fixed.spatial is not False
        assert example.revision.feedback != "nothing"
    assert made >= 50


class ReflectingJudge:
    """Finds every first pick wrong (reflect 0.1, then 0.9 on second tries); all paths clear, all have potential."""

    def __init__(self):
        self.reflected = 0

    def yes(self, queries, question="outcome"):
        if question == "reflect":
            self.reflected += 1
            return [0.1 if self.reflected == 1 else 0.9 for _ in queries]
        return [0.6 for _ in queries]

    def feedback(self, queries):
        return [REVISION.feedback for _ in queries]


def test_parm_plus_tries_again_with_the_feedback(policy, monkeypatch):
    seen = []
    generate = policy.generate

    def spy(*args, **kwargs):
        seen.append(kwargs.get("revisions"))
        return generate(*args, **kwargs)

    monkeypatch.setattr(policy, "generate", spy)
    settings = VerifierSettings(candidates=3, checks=2, rounds=2)
    prompts = ["a photo of two red circles", "a photo of a blue square"]
    picks = verify("parm++", policy, ReflectingJudge(), prompts, settings)
    assert seen[0] is None and len(seen) == 2  # the first try, one second try (then the judge is content)
    assert [r.feedback for r in seen[1]] == [REVISION.feedback] * 2
    for pick in picks:
        assert pick.image_tokens == 2 * 3 * policy.num_image_tokens  # two rounds of three candidates
        assert pick.feedback == [REVISION.feedback]
        assert any(e.startswith("round 1: reflection P(yes) 0.10") for e in pick.events)
    with pytest.raises(ThinkdrawError, match="cannot be replayed"):
        replay("parm++", policy, ReflectingJudge(), [], settings)


def test_parm_plus_keeps_the_first_pick_when_the_second_try_scores_lower(policy):
    class Worse(ReflectingJudge):
        def yes(self, queries, question="outcome"):
            if question == "reflect":
                return [0.1 for _ in queries]  # never content: both rounds try again
            return [0.6 if self.reflected == 0 else 0.3 for _ in queries]

        def feedback(self, queries):
            self.reflected += 1
            return super().feedback(queries)

    settings = VerifierSettings(candidates=2, checks=2, rounds=2)
    first = verify("parm", policy, ReflectingJudge(), ["a photo of a circle"], settings)[0]
    pick = verify("parm++", policy, Worse(), ["a photo of a circle"], settings)[0]
    assert torch.equal(pick.candidates[pick.chosen].image_tokens, first.candidates[first.chosen].image_tokens)
    assert pick.scores == [0.6, 0.6] and pick.feedback == [REVISION.feedback] * 2
    assert pick.image_tokens == 3 * 2 * policy.num_image_tokens  # every round's candidates count
    assert pick.events[-1] == "round 2: the new pick scores 0.30 against 0.60; kept"


def test_parm_plus_with_no_rounds_is_parm(policy):
    settings = VerifierSettings(candidates=3, checks=2, rounds=0)
    a = verify("parm++", policy, ReflectingJudge(), ["a photo of a circle"], settings)
    b = verify("parm", policy, ReflectingJudge(), ["a photo of a circle"], settings)
    assert (a[0].chosen, a[0].image_tokens, a[0].scores) == (b[0].chosen, b[0].image_tokens, b[0].scores)


def test_sft_batches_hold_second_tries(policy, tmp_path):
    from thinkdraw.configs import TrainPolicyConfig
    from thinkdraw.trainers.sft import make_batch
    from thinkdraw.world.data import WorldExamples

    config = TrainPolicyConfig(stage="sft", init=tmp_path, out=tmp_path / "run", batch_size=32, revise_rate=0.5)
    batch = make_batch(policy, WorldExamples("val", revise_rate=0.5), config, step=0)
    revised = [c for c in batch.contexts if policy.format.revise in c]
    assert 4 <= len(revised) <= 20
    for context, plan in zip(batch.contexts, batch.plans, strict=True):
        if policy.format.revise in context:
            assert context[-1] == policy.format.think and plan  # a plan follows: the fixed one
    plain = make_batch(policy, WorldExamples("val"), TrainPolicyConfig(stage="sft", init=tmp_path, out=tmp_path), 0)
    assert not any(policy.format.revise in c for c in plain.contexts)
