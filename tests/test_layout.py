"""Plan-guided positions (each image patch told the planned box it lies in) and the rationale format."""

from __future__ import annotations

import pytest
import torch
from test_cli import assert_one_line_error, invoke
from test_cli_model import model_dir  # noqa: F401  (a pytest fixture: the tiny world model, saved)
from tiny_models import tiny_policy, tiny_vq

from thinkdraw.configs import TrainPolicyConfig
from thinkdraw.engine.sampling import SamplingSettings, sequence_logits
from thinkdraw.policy.layout import layout_token
from thinkdraw.trainers import sft
from thinkdraw.world.data import WorldExamples, rationale_of
from thinkdraw.world.model import new_world_policy, with_layout
from thinkdraw.world.splits import load_split

torch.set_num_threads(1)

PROMPT = "a photo of a red circle and a blue star"
PLAN = "red circle (156,234),(438,516); blue star (625,94),(906,375)"  # pixels (10,15)-(28,33), (40,6)-(58,24)


@pytest.fixture(scope="module")
def policy():
    return tiny_policy()  # 8 x 8 tokens of 8 x 8 pixels


def test_layout_rows_name_the_box_each_patch_overlaps(policy):
    vocab = policy.tokenizer.get_vocab()
    rows = policy.layout.rows(policy.plan_ids(PLAN))
    red, circle = vocab["red"], vocab["circle"]
    covered = {k for k, ids in enumerate(rows) if ids}
    # red circle: columns 10 // 8 = 1 .. ceil(28 / 8) - 1 = 3, rows 1 .. 4; blue star: columns 5 .. 7, rows 0 .. 2
    expected = {r * 8 + c for r in range(1, 5) for c in range(1, 4)} | {
        r * 8 + c for r in range(0, 3) for c in range(5, 8)
    }
    assert covered == expected
    top_left = rows[1 * 8 + 1]  # patch pixels (8, 8): dx = 8 - 10 = -2, dy = 8 - 15 = -7 (P - 1 = 7 below zero)
    assert top_left == [
        vocab[layout_token("dx", -2 + 7)],
        vocab[layout_token("dy", -7 + 7)],
        vocab[layout_token("w", 18 - 1)],
        vocab[layout_token("h", 18 - 1)],
        red,
        circle,
    ]
    assert policy.layout.rows([]) == [[]] * 64
    broken = policy.plan_ids("red circle (156,234),(438,516); star (1,2)")  # the readable entry still guides
    assert {k for k, ids in enumerate(policy.layout.rows(broken)) if ids} == {
        r * 8 + c for r in range(1, 5) for c in range(1, 4)
    }


def test_layout_guides_the_conditional_rows_only(policy):
    ids = [policy.encode(PROMPT, think=True)]
    plan = [policy.plan_ids(PLAN)]
    image = torch.randint(0, 64, (1, 64), generator=torch.Generator().manual_seed(0))
    layout = policy.layout_of(plan)
    args = (policy.model, ids, plan, image, policy.special)
    with torch.no_grad():
        guided = sequence_logits(*args, layout=layout)[1]
        plain = sequence_logits(*args)[1]
        assert not torch.allclose(guided, plain)
        assert torch.equal(
            sequence_logits(*args, uncond=True, layout=layout)[1], sequence_logits(*args, uncond=True)[1]
        )
        first = policy.layout.first["dx"]
        text = sequence_logits(*args, layout=layout)[0][0]
        assert torch.isinf(text[:, first : first + 10]).all()  # layout tokens are never written


@pytest.mark.parametrize("given", [False, True])
def test_teacher_forced_logprobs_equal_the_sampler_with_layout(policy, given):
    model = tiny_policy()
    model.model.double()
    settings = SamplingSettings(cfg_scale=3.0, temperature=1.0, max_think_tokens=12)
    plans = [PLAN, "white square (0,0),(300,300)"] if given else None
    prompts = [PROMPT, "a photo of a white square"]
    candidates = model.generate(prompts, n=2, seed=1, settings=settings, plans=plans)
    think, images = model.logprobs(
        [c.prompt for c in candidates],
        [c.plan_ids for c in candidates],
        torch.stack([c.image_tokens for c in candidates]),
        True,
        [c.boi_sampled for c in candidates],
        settings,
    )
    assert torch.allclose(images, torch.stack([c.image_logprobs for c in candidates]), atol=1e-9)
    for c, lp in zip(candidates, think, strict=True):
        assert torch.allclose(lp, c.plan_logprobs, atol=1e-9)


def test_with_layout_appends_tokens_and_keeps_everything_else():
    old = new_world_policy(tiny_vq(), hidden=64, layers=2, layout=False)
    assert old.layout is None and old.format.rationale is None
    before = old.model.model.language_model.embed_tokens.weight.detach().clone()
    vocab = dict(old.tokenizer.get_vocab())
    new = with_layout(old)
    assert new.layout is not None and new.format.rationale is not None
    assert all(new.tokenizer.get_vocab()[t] == i for t, i in vocab.items())
    assert torch.equal(new.model.model.language_model.embed_tokens.weight[: len(vocab)], before)
    assert with_layout(new) is new


def test_rationales_restate_the_scene_resolved():
    by_prompt = {r["prompt"]: r for r in load_split("val")}
    assert rationale_of(by_prompt["a photo of a star the colour of a tree trunk"]) == "one brown star"
    assert (
        rationale_of(by_prompt["a photo of a diamond right of two black triangles and a cross"])
        == "two black triangles, one diamond right of the triangles, one cross"
    )


def test_rationale_rows_start_with_the_rationale_token(policy, tmp_path):
    config = TrainPolicyConfig(
        stage="sft", init=tmp_path, batch_size=12, think_rate=1.0, rationale_rate=1.0, drop_rate=0
    )
    batch = sft.make_batch(policy, WorldExamples("train", error_rate=0.0), config, step=0)
    assert all(c[-1] == policy.format.rationale for c in batch.contexts)
    assert all("(" not in policy.tokenizer.decode(p) for p in batch.plans)  # no boxes


def test_generate_writes_a_rationale(model_dir, tmp_path):  # noqa: F811
    out = tmp_path / "r.png"
    args = ["generate", PROMPT, "--model", model_dir, "--reasoning", "rationale", "-n", "1", "-o", out]
    result = invoke(*args, "--threads", "1", "--cfg-scale", "2", "--max-think-tokens", "6")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("[0] rationale: ")
    assert_one_line_error(invoke(*args, "--no-think"), "--reasoning is not used with --no-think")
    assert_one_line_error(invoke(*args[:-4], "--reasoning", "story"), "--reasoning 'story'")
