"""The sampling engine on a tiny random Janus: cache, seeds, teacher forcing, batch independence, CFG.

The random model is sharpened so the checks mean something: the image head is scaled x8 (peaked image
distributions, so a wrong position or a wrong CFG row changes tokens), and the boi embedding points along
the mean final hidden state, so plans end by sampling boi after a few tokens while some hit the cap.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from transformers import JanusConfig, JanusForConditionalGeneration

from thinkdraw.engine.sampling import (
    SamplingSettings,
    SpecialIds,
    cfg_combine,
    generate,
    image_embeddings,
    sample_next_token,
    sample_tokens,
    sequence_logits,
    teacher_forced_logprobs,
)

torch.set_num_threads(1)

PAD, BOS, BOI = 0, 1, 3
TEXT_VOCAB, HIDDEN, CODEBOOK, N_IMAGE = 128, 64, 256, 16
SPECIAL = SpecialIds(pad=PAD, bos=BOS, boi=BOI)
# the world model's layout: the last N_IMAGE text ids are image-position tokens (section 9)
POSITIONED = SpecialIds(pad=PAD, bos=BOS, boi=BOI, image_positions=range(TEXT_VOCAB - N_IMAGE, TEXT_VOCAB))
PROMPTS = [[BOS, 40, 41, 42, 43, 44], [BOS, 50, 51], [BOS, 60, 61, 62, 63, 64, 65, 66, 67], [BOS, 70, 71, 72]]
SEEDS = [100, 101, 102, 103]
# With these seeds the plans end as [cap of 8, boi after 2, boi at once, boi after 2] (checked in test 3).
SETTINGS = SamplingSettings(cfg_scale=5.0, temperature=0.9, top_k=50, text_top_k=20, max_think_tokens=8)


def tiny_model() -> JanusForConditionalGeneration:
    """64x64 images, patch 16 and 5 VQ levels -> 4x4 = 16 image tokens; Llama 2 x 64; codebook 256."""
    config = JanusConfig(
        text_config=dict(
            model_type="llama",
            vocab_size=TEXT_VOCAB,
            hidden_size=HIDDEN,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            pad_token_id=PAD,
            bos_token_id=BOS,
            initializer_range=0.05,
        ),
        vision_config=dict(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            mlp_ratio=2,
            image_size=64,
            patch_size=16,
            projection_dim=HIDDEN,
            depth=2,
            num_image_tokens=N_IMAGE,
        ),
        vq_config=dict(
            embed_dim=8,
            num_embeddings=CODEBOOK,
            latent_channels=32,
            base_channels=32,
            channel_multiplier=[1] * 5,
            num_res_blocks=1,
            projection_dim=HIDDEN,
            image_token_embed_dim=HIDDEN,
            initializer_range=0.05,
        ),
    )
    torch.manual_seed(0)
    model = JanusForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.model.generation_head.vision_head.weight.mul_(8.0)
        lm = model.model.language_model
        probe = torch.randint(7, TEXT_VOCAB, (8, 12), generator=torch.Generator().manual_seed(1))
        direction = lm(input_ids=probe).last_hidden_state.reshape(-1, HIDDEN).mean(0)  # [H]
        scale = 3.0 * lm.embed_tokens.weight.norm(dim=-1).mean()
        lm.embed_tokens.weight[BOI] = scale * direction / direction.norm()  # tied: lm_head's boi row too
    return model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def model64(model):
    return copy.deepcopy(model).double()


def gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def run(model, prompts=PROMPTS, seeds=SEEDS, settings=SETTINGS, think=True, special=SPECIAL, **kwargs):
    return generate(model, prompts, special, settings, gens(seeds), think=think, num_image_tokens=N_IMAGE, **kwargs)


def max_diff(a, b) -> float:
    """Max |a - b| over rollouts' log-probs (lists of per-row tensors, or tensors)."""
    if isinstance(a, list):
        return max([(x - y).abs().max().item() for x, y in zip(a, b, strict=True) if x.numel()] + [0.0])
    return (a - b).abs().max().item()


def assert_same_tokens(a, b):
    assert a.think_ids == b.think_ids
    assert torch.equal(a.image_ids, b.image_ids)
    assert [len(x) for x in a.think_logprobs] == [len(x) for x in b.think_logprobs]


# 1 ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg_scale", [5.0, 1.0])
def test_cache_matches_recompute(model, cfg_scale):
    settings = SamplingSettings(**{**SETTINGS.__dict__, "cfg_scale": cfg_scale})
    cached, full = run(model, settings=settings), run(model, settings=settings, use_cache=False)
    assert_same_tokens(cached, full)
    assert max_diff(cached.think_logprobs, full.think_logprobs) < 1e-4
    assert max_diff(cached.image_logprobs, full.image_logprobs) < 1e-4


# 2 ------------------------------------------------------------------------------------------------------------


def test_seeded_runs_are_bitwise_repeatable(model):
    a, b = run(model), run(model)
    assert_same_tokens(a, b)
    assert all(torch.equal(x, y) for x, y in zip(a.think_logprobs, b.think_logprobs, strict=True))
    assert torch.equal(a.image_logprobs, b.image_logprobs)
    c = run(model, seeds=[s + 1000 for s in SEEDS])
    assert not torch.equal(a.image_ids, c.image_ids)
    assert a.think_ids != c.think_ids


# 3 ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.float64, 1e-5)])
def test_teacher_forced_logprobs_match_sampler(model, model64, dtype, tol):
    m = model64 if dtype == torch.float64 else model
    r = run(m)
    # the rollout covers a forced boi (row 0, at the cap), sampled ones, and an empty plan (row 2)
    assert r.boi_sampled == [False, True, True, True]
    assert [len(t) for t in r.think_ids] == [8, 2, 0, 2]
    assert r.image_logprobs.dtype == dtype
    think, image = teacher_forced_logprobs(m, PROMPTS, r.think_ids, r.image_ids, SPECIAL, SETTINGS, r.boi_sampled)
    assert [len(x) for x in think] == [len(x) for x in r.think_logprobs]
    assert max_diff(think, r.think_logprobs) < tol
    assert max_diff(image, r.image_logprobs) < tol


def test_teacher_forced_logprobs_are_differentiable(model):
    r = run(model)
    think, image = teacher_forced_logprobs(model, PROMPTS, r.think_ids, r.image_ids, SPECIAL, SETTINGS, r.boi_sampled)
    (image.sum() + sum(t.sum() for t in think)).backward()
    grads = [p.grad for p in model.model.language_model.parameters()] + [
        model.model.generation_head.proj_out.weight.grad
    ]
    try:
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert model.model.language_model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    finally:
        model.zero_grad(set_to_none=True)


def test_sequence_logits_give_the_teacher_forced_logprobs(model64):
    r = run(model64)
    plain = SamplingSettings(cfg_scale=5.0, max_think_tokens=8)  # T = 1, no top-k: raw logits + CFG only
    think, image = teacher_forced_logprobs(model64, PROMPTS, r.think_ids, r.image_ids, SPECIAL, plain, [True] * 4)
    text_logits, cond = sequence_logits(model64, PROMPTS, r.think_ids, r.image_ids, SPECIAL)
    _, uncond = sequence_logits(model64, PROMPTS, r.think_ids, r.image_ids, SPECIAL, uncond=True)
    assert cond.shape == (4, N_IMAGE, CODEBOOK)
    assert [tuple(x.shape) for x in text_logits] == [(len(t) + 1, TEXT_VOCAB) for t in r.think_ids]
    guided = torch.log_softmax(cfg_combine(cond, uncond, 5.0), -1).gather(-1, r.image_ids[..., None])[..., 0]
    assert max_diff(guided, image) < 1e-10
    for logits, plan, logps in zip(text_logits, r.think_ids, think, strict=True):
        expected = torch.log_softmax(logits, -1)[torch.arange(len(plan) + 1), plan + [BOI]]
        assert max_diff(expected, logps) < 1e-10


# 4 ------------------------------------------------------------------------------------------------------------


def test_rows_do_not_depend_on_the_batch(model):
    batch = run(model)
    for i in range(4):
        alone = run(model, prompts=[PROMPTS[i]], seeds=[SEEDS[i]])
        assert alone.think_ids[0] == batch.think_ids[i]
        assert torch.equal(alone.image_ids[0], batch.image_ids[i])
        assert max_diff(alone.think_logprobs, batch.think_logprobs[i : i + 1]) < 1e-4
        assert max_diff(alone.image_logprobs[0], batch.image_logprobs[i]) < 1e-4


# 5 ------------------------------------------------------------------------------------------------------------


def test_given_plans_are_drawn_after(model):
    plans = [[20, 21, 22], [], [23], [24, 25, 26, 27, 28]]
    steps = []
    # text top-k off: a given plan may hold tokens outside the model's top-k (log-prob -inf, correctly)
    settings = SamplingSettings(**{**SETTINGS.__dict__, "text_top_k": 0})
    r = run(model, settings=settings, plan_ids=plans, on_image_step=lambda k, ids: steps.append((k, ids)))
    assert r.think_ids == plans
    assert r.boi_sampled == [False] * 4  # the given plans' token log-probs, no boi entry
    think, image = teacher_forced_logprobs(model, PROMPTS, plans, r.image_ids, SPECIAL, settings, [False] * 4)
    assert max_diff(think, r.think_logprobs) < 1e-4
    assert max_diff(image, r.image_logprobs) < 1e-4  # the image was drawn conditioned on prompt + plan
    other = run(model, settings=settings, plan_ids=[[30, 31, 32], [33], [34], [35]])
    assert not torch.equal(other.image_ids, r.image_ids)
    assert [k for k, _ in steps] == list(range(1, N_IMAGE + 1))
    assert all(ids.shape == (4, k) for k, ids in steps)
    assert torch.equal(steps[-1][1], r.image_ids)


def test_no_think_draws_right_after_the_prompt(model):
    r = run(model, think=False)
    assert r.think_ids == [[]] * 4
    assert all(x.numel() == 0 for x in r.think_logprobs)
    think, image = teacher_forced_logprobs(model, PROMPTS, r.think_ids, r.image_ids, SPECIAL, SETTINGS, [False] * 4)
    assert max_diff(image, r.image_logprobs) < 1e-4


# 6 ------------------------------------------------------------------------------------------------------------


def test_max_think_tokens_forces_boi(model):
    suppress = model.lm_head.register_forward_hook(
        lambda module, args, out: out.index_fill(-1, torch.tensor(BOI), -1e9)
    )
    try:
        settings = SamplingSettings(**{**SETTINGS.__dict__, "max_think_tokens": 3})
        r = run(model, settings=settings)
        think, image = teacher_forced_logprobs(model, PROMPTS, r.think_ids, r.image_ids, SPECIAL, settings, [False] * 4)
    finally:
        suppress.remove()
    assert [len(t) for t in r.think_ids] == [3] * 4
    assert [len(x) for x in r.think_logprobs] == [3] * 4  # no entry for the forced boi
    assert r.boi_sampled == [False] * 4
    assert max_diff(think, r.think_logprobs) < 1e-4 and max_diff(image, r.image_logprobs) < 1e-4


# 7 ------------------------------------------------------------------------------------------------------------


def test_sample_next_token_greedy_and_top1():
    logits = torch.randn(50, generator=torch.Generator().manual_seed(0))
    best = int(logits.argmax())
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        assert sample_next_token(logits, g, temperature=0.0, top_k=0)[0] == best
        token, logp = sample_next_token(logits, g, temperature=1.3, top_k=1)
        assert token == best and logp == 0.0


@pytest.mark.parametrize("temperature, top_k", [(1.0, 0), (0.7, 0), (2.0, 4)])
def test_sample_next_token_distribution(temperature, top_k):
    logits = torch.tensor([1.0, 0.2, -0.5, 2.0, 0.0, -1.0])
    expected = torch.softmax(logits / temperature, -1)
    if top_k:
        expected = torch.where(logits >= logits.topk(top_k).values[-1], expected, 0.0)
        expected = expected / expected.sum()
    g = torch.Generator().manual_seed(2)
    counts = torch.zeros(6)
    for _ in range(20000):
        token, logp = sample_next_token(logits, g, temperature, top_k)
        counts[token] += 1
        assert math.isclose(logp, math.log(expected[token]), abs_tol=1e-6)
    assert (counts / 20000 - expected).abs().max() < 0.01


def test_sample_next_token_uses_one_uniform_per_call():
    logits = torch.randn(10, generator=torch.Generator().manual_seed(3))
    g, reference = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    sample_next_token(logits, g, 0.0, 0)
    sample_next_token(logits, g, 1.0, 3)
    torch.rand(2, generator=reference, dtype=torch.float64)
    assert torch.equal(torch.rand(1, generator=g), torch.rand(1, generator=reference))


@pytest.mark.parametrize("temperature, top_k", [(1.0, 0), (0.8, 3), (0.0, 0)])
def test_sample_tokens_rows_equal_one_row_calls(temperature, top_k):
    logits = torch.randn(5, 40, generator=torch.Generator().manual_seed(5))
    batch = [torch.Generator().manual_seed(10 + i) for i in range(5)]
    single = [torch.Generator().manual_seed(10 + i) for i in range(5)]
    for _ in range(30):
        tokens, logps = sample_tokens(logits, batch, temperature, top_k)
        for i in range(5):
            token, logp = sample_next_token(logits[i], single[i], temperature, top_k)
            assert (int(tokens[i]), float(logps[i])) == (token, logp)


def test_sample_tokens_never_picks_a_token_without_mass():
    logits = torch.tensor([[0.0, 0.0, float("-inf"), float("-inf")]] * 64)  # u * total may round up to total
    tokens, logps = sample_tokens(logits, [torch.Generator().manual_seed(i) for i in range(64)], 1.0, 0)
    assert set(tokens.tolist()) <= {0, 1} and torch.isfinite(logps).all()


# 8 ------------------------------------------------------------------------------------------------------------


def test_cfg_combine_pinned():
    cond, uncond = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 1.0, 5.0])
    assert torch.equal(cfg_combine(cond, uncond, 5.0), torch.tensor([5.0, 6.0, -5.0]))
    assert torch.equal(cfg_combine(cond, uncond, 1.0), cond)
    assert torch.equal(cfg_combine(cond, uncond, 0.0), uncond)


@pytest.mark.parametrize("cfg_scale, rows", [(1.0, 4), (5.0, 8)])
def test_batch_doubles_only_with_guidance(model, cfg_scale, rows):
    seen = []
    hook = model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["inputs_embeds"].shape[0]), with_kwargs=True
    )
    try:
        settings = SamplingSettings(**{**SETTINGS.__dict__, "cfg_scale": cfg_scale})
        r = run(model, settings=settings)
        teacher_forced_logprobs(model, PROMPTS, r.think_ids, r.image_ids, SPECIAL, settings, r.boi_sampled)
    finally:
        hook.remove()
    assert max(seen) == rows
    assert seen[-1] == rows  # the single teacher-forced forward


# 9 ------------------------------------------------------------------------------------------------------------


def test_image_tokens_carry_the_position_they_predict(model):
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    embed = model.model.language_model.get_input_embeddings()
    got = image_embeddings(model, ids, 4, POSITIONED)
    rows = embed(torch.tensor([TEXT_VOCAB - N_IMAGE + k for k in (5, 6, 7)]))  # indices 4, 5, 6 predict 5, 6, 7
    assert torch.equal(got, model.prepare_embeddings_for_image_generation(ids) + rows)
    assert torch.equal(image_embeddings(model, ids, 4, SPECIAL), model.prepare_embeddings_for_image_generation(ids))


def test_positions_change_the_drawing(model):
    assert not torch.equal(run(model, special=POSITIONED).image_ids, run(model).image_ids)


@pytest.mark.parametrize("cfg_scale", [5.0, 1.0])
def test_engine_invariants_hold_with_positions(model, model64, cfg_scale):
    settings = SamplingSettings(**{**SETTINGS.__dict__, "cfg_scale": cfg_scale})
    cached = run(model, settings=settings, special=POSITIONED)
    assert_same_tokens(cached, run(model, settings=settings, special=POSITIONED, use_cache=False))
    r = run(model64, settings=settings, special=POSITIONED)
    think, image = teacher_forced_logprobs(
        model64, PROMPTS, r.think_ids, r.image_ids, POSITIONED, settings, r.boi_sampled
    )
    assert max_diff(think, r.think_logprobs) < 1e-5 and max_diff(image, r.image_logprobs) < 1e-5
    for i in (0, 3):
        alone = run(model, prompts=[PROMPTS[i]], seeds=[SEEDS[i]], settings=settings, special=POSITIONED)
        assert alone.think_ids[0] == cached.think_ids[i]
        assert torch.equal(alone.image_ids[0], cached.image_ids[i])


def test_position_tokens_are_never_written(model):
    positions = torch.tensor(list(POSITIONED.image_positions))
    favour = model.lm_head.register_forward_hook(
        lambda module, args, out: out.index_add(
            -1, positions, torch.full(out.shape[:-1] + (len(positions),), 1e3, dtype=out.dtype)
        )
    )
    try:
        r = run(model, special=POSITIONED)
        think, _ = teacher_forced_logprobs(
            model, PROMPTS, r.think_ids, r.image_ids, POSITIONED, SETTINGS, r.boi_sampled
        )
        text_logits, _ = sequence_logits(model, PROMPTS, r.think_ids, r.image_ids, POSITIONED)
    finally:
        favour.remove()
    assert sum(len(t) for t in r.think_ids) > 0
    assert not any(token in POSITIONED.image_positions for t in r.think_ids for token in t)
    assert all(torch.isfinite(x).all() for x in think)
    assert all(torch.isneginf(x[:, positions]).all() for x in text_logits)


# 7: pruning (PARM) ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
@pytest.mark.parametrize("use_cache", [True, False])
def test_pruned_rows_stop_and_the_others_draw_as_before(model, cfg_scale, use_cache):
    settings = SamplingSettings(**{**SETTINGS.__dict__, "cfg_scale": cfg_scale})
    full = run(model, settings=settings, use_cache=use_cache)
    seen = []

    def prune(k, ids):
        seen.append(ids.shape)
        if k == 3:
            return torch.tensor([True, False, True, True])
        if k == 5:
            return torch.tensor([False, True, True, False])  # row 1 stays pruned whatever the mask says
        return None

    pruned = run(model, settings=settings, use_cache=use_cache, on_image_step=prune)
    assert pruned.drawn == [5, 3, N_IMAGE, 5]
    assert all(shape[0] == 4 for shape in seen) and len(seen) == N_IMAGE
    assert pruned.think_ids == full.think_ids
    for i, n in enumerate(pruned.drawn):
        assert torch.equal(pruned.image_ids[i, :n], full.image_ids[i, :n])  # the same draws up to the cut
        assert max_diff(pruned.image_logprobs[i, :n], full.image_logprobs[i, :n]) < 1e-4
        assert not pruned.image_ids[i, n:].any() and not pruned.image_logprobs[i, n:].any()


def test_pruning_every_row_ends_the_loop(model):
    calls = []

    def prune_all(k, ids):
        calls.append(k)
        return torch.zeros(4, dtype=torch.bool)

    r = run(model, on_image_step=prune_all)
    assert calls == [1] and r.drawn == [1, 1, 1, 1]
