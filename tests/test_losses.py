"""The judge's answer loss, DPO, GRPO and ReasonGen-R1's adaptive entropy, against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from thinkdraw.trainers.losses import (
    adapt_entropy_coefficient,
    answer_cross_entropy,
    dpo_loss,
    entropy,
    group_advantages,
    grpo_loss,
)


def test_dpo_by_hand():
    out = dpo_loss(
        torch.tensor([-10.0, -20.0]),
        torch.tensor([-12.0, -18.0]),
        torch.tensor([-11.0, -20.0]),
        torch.tensor([-11.0, -19.0]),
    )
    # pair 0: chosen margin 1, rejected -1 -> 0.1 * 2 = 0.2; pair 1: chosen 0, rejected 1 -> -0.1
    expected = (-math.log(1 / (1 + math.exp(-0.2))) - math.log(1 / (1 + math.exp(0.1)))) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.metrics["reward_accuracy"] == 0.5
    assert out.metrics["reward_chosen"] == pytest.approx(0.05) and out.metrics["reward_rejected"] == pytest.approx(0.0)
    equal = dpo_loss(*(torch.zeros(3),) * 4)
    assert equal.loss.item() == pytest.approx(math.log(2))  # a policy equal to its reference: log 2


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    chosen, rejected = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    dpo_loss(chosen, rejected, torch.zeros(1), torch.zeros(1), beta=0.5).loss.backward()
    assert chosen.grad.item() == pytest.approx(-0.25) and rejected.grad.item() == pytest.approx(0.25)  # beta * 0.5


def test_group_advantages_by_hand():
    adv = group_advantages([1.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.5, 0.5], group_size=4, eps=0.0)
    assert adv[:4] == pytest.approx([1.0, -1.0, 1.0, -1.0])  # mean 0.5, population std 0.5
    assert adv[4:] == [None] * 4  # identical rewards: the group is dropped
    with_none = group_advantages([1.0, None, 0.0, 0.0], group_size=4, eps=0.0)
    std = math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 3)
    assert with_none[1] is None  # no reward: out of the baseline, no advantage
    assert with_none[0] == pytest.approx((2 / 3) / std) and with_none[2] == pytest.approx((-1 / 3) / std)
    assert group_advantages([None, 1.0], group_size=2) == [None, None]
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages([1.0] * 4, group_size=3)


def test_grpo_clipped_surrogate_by_hand():
    old = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    new = torch.log(torch.tensor([[0.75, 0.5], [0.25, 0.5]]))  # ratios [[1.5, 1], [0.5, 1]]
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    out = grpo_loss(new, old, adv, mask, clip=0.2)
    # row 0: -min(1.5, 1.2) = -1.2 and -1; row 1 (A = -1): -min(-0.5, -0.8) = 0.8; the masked token does not count
    assert out.loss.item() == pytest.approx((-1.2 - 1.0 + 0.8) / 3, rel=1e-6)
    assert out.metrics["clip_fraction"] == pytest.approx(2 / 3)
    sequence = grpo_loss(new, old, adv, mask, clip=0.2, level="sequence")
    assert sequence.loss.item() == pytest.approx(((-1.2 - 1.0) / 2 + 0.8) / 2, rel=1e-6)


def test_grpo_kl_term_by_hand():
    logps = torch.tensor([[math.log(0.5)]])
    ref = torch.tensor([[math.log(0.25)]])
    out = grpo_loss(logps, logps, torch.tensor([0.0]), torch.ones(1, 1), ref_logps=ref, kl_beta=0.1)
    delta = math.log(0.5)  # ref - logp
    kl = math.exp(delta) - delta - 1
    assert out.metrics["kl"] == pytest.approx(kl) and out.loss.item() == pytest.approx(0.1 * kl)
    assert grpo_loss(logps, logps, torch.tensor([0.0]), torch.ones(1, 1), ref_logps=logps, kl_beta=0.1).loss.item() == 0


def test_grpo_gradient_at_ratio_one_is_the_advantage():
    logps = torch.zeros(2, 3, requires_grad=True)
    grpo_loss(logps, logps.detach(), torch.tensor([2.0, -1.0]), torch.ones(2, 3)).loss.backward()
    assert torch.allclose(logps.grad, torch.tensor([[-2.0] * 3, [1.0] * 3]) / 6)


def test_entropy_and_its_adaptive_coefficient():
    uniform = torch.zeros(1, 2, 4)
    assert entropy(uniform, torch.ones(1, 2)).item() == pytest.approx(math.log(4))
    peaked = torch.tensor([[[100.0, 0, 0, 0], [0.0, 0, 0, 0]]])
    assert entropy(peaked, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)
    c = 0.0
    for _ in range(10):  # below target: a growing bonus, capped
        c = adapt_entropy_coefficient(c, current=1.0, target=2.0, step=1e-3, limit=5e-3)
    assert c == pytest.approx(5e-3)
    c = adapt_entropy_coefficient(c, current=3.0, target=2.0, step=1e-3, limit=5e-3)
    assert c == pytest.approx(4e-3)
    assert adapt_entropy_coefficient(-5e-3, current=9.0, target=7.0, step=1e-3, limit=5e-3) == pytest.approx(-5e-3)


def test_entropy_of_distributions_with_ruled_out_tokens_is_finite_and_differentiable():
    logits = torch.tensor([[[0.0, 0.0, float("-inf"), float("-inf")]]], requires_grad=True)
    h = entropy(logits, torch.ones(1, 1))
    assert h.item() == pytest.approx(math.log(2))
    h.backward()
    assert torch.isfinite(logits.grad).all()


def test_answer_cross_entropy_weighs_each_row_the_same_whatever_its_length():
    # vocabulary of 2; the logits at position t predict the label at t + 1
    logits = torch.zeros(2, 4, 2)
    logits[0, 2] = torch.tensor([math.log(3.0), 0.0])  # P(token 0) = 3/4 at row 0's one scored position
    labels = torch.full((2, 4), -100)
    labels[0, 3] = 0  # row 0: one answer token, CE -log(3/4)
    labels[1, 1:] = 1  # row 1: three answer tokens under uniform logits, CE log 2 each
    out = answer_cross_entropy(logits, labels)
    by_hand = (-math.log(0.75) + math.log(2.0)) / 2  # the mean of the rows' means
    assert out.loss.item() == pytest.approx(by_hand, abs=1e-6)
    assert out.metrics["answer_ce"] == pytest.approx(by_hand, abs=1e-6)
    token_mean = (-math.log(0.75) + 3 * math.log(2.0)) / 4  # what transformers' loss would give
    assert abs(out.loss.item() - token_mean) > 0.05
    # as two micro-batches of one row each, with the step's row count, the shares add up to the whole
    halves = [answer_cross_entropy(logits[i : i + 1], labels[i : i + 1], rows=2).loss.item() for i in (0, 1)]
    assert sum(halves) == pytest.approx(by_hand, abs=1e-6)
