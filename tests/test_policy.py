"""The Policy interface and the world VQ on a tiny untrained model: candidates, seeds, teacher forcing, decoding,
save / load, and the patch-local world VQ (a token depends on its patch alone; the codebook gives each common
patch its own code; decoding is transformers' own).

The random model is sharpened so that the checks mean something: the image head is scaled up (peaked image
distributions, so a wrong row, seed or position changes tokens) and the boi row of the LM head points along the
mean hidden state, so some plans end by sampling boi and others run to max_think_tokens.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from tiny_models import TINY_CODEBOOK, tiny_policy, tiny_vq
from transformers import JanusVQVAE

from thinkdraw.checkpoint import CheckpointError
from thinkdraw.engine.sampling import SamplingSettings
from thinkdraw.errors import ThinkdrawError
from thinkdraw.plan import GRID as PLAN_GRID
from thinkdraw.policy.formats import PromptError
from thinkdraw.policy.model import Policy
from thinkdraw.policy.vq import (
    decode_tokens,
    encode_images,
    encode_pixels,
    patchify,
    to_images,
    to_pixels,
)
from thinkdraw.world.data import world_example
from thinkdraw.world.layout import random_layout
from thinkdraw.world.model import COORDINATE_PERIODS, build_tokenizer, init_codebook, world_vq_config
from thinkdraw.world.render import render_image
from thinkdraw.world.splits import load_split

torch.set_num_threads(1)

N_IMAGE = 64
MAX_THINK = 10
SETTINGS = SamplingSettings(cfg_scale=3.0, temperature=1.0, top_k=0, max_think_tokens=MAX_THINK)
PROMPTS = [r["prompt"] for r in load_split("test")[::60]]  # 8 prompts across the tasks


@pytest.fixture(scope="module")
def policy() -> Policy:
    policy = tiny_policy()
    model = policy.model
    with torch.no_grad():
        lm = model.model.language_model
        ids = torch.tensor([policy.encode(r["prompt"], think=True) for r in load_split("test")[:6]])  # [6, T]
        hidden = lm(input_ids=ids).last_hidden_state.reshape(-1, lm.config.hidden_size)  # [6 * T, H]
        direction = hidden.mean(0)
        model.lm_head.weight[policy.special.boi] = 1.6 * direction / direction.norm()  # tied: the boi embedding too
        model.model.generation_head.vision_head.weight.mul_(30.0)
    return policy


@pytest.fixture(scope="module")
def candidates(policy):
    return policy.generate(PROMPTS, think=True, seed=0, settings=SETTINGS)


def test_candidates_carry_the_interface_fields(policy, candidates):
    assert [c.prompt for c in candidates] == PROMPTS
    ended = 0
    for c in candidates:
        assert isinstance(c.plan, str)
        assert c.image_tokens.shape == (N_IMAGE,) and c.image_tokens.dtype == torch.long
        assert 0 <= int(c.image_tokens.min()) and int(c.image_tokens.max()) < TINY_CODEBOOK
        assert (c.image.size, c.image.mode) == ((64, 64), "RGB")
        assert c.image_logprobs.shape == (N_IMAGE,)
        assert torch.isfinite(c.image_logprobs).all() and (c.image_logprobs <= 0).all()
        assert torch.isfinite(c.plan_logprobs).all() and (c.plan_logprobs <= 0).all()
        # a plan runs to the cap (no entry for the forced boi) or ends by sampling boi (its log-prob last)
        assert 1 <= len(c.plan_logprobs) <= MAX_THINK
        ended += len(c.plan_logprobs) < MAX_THINK
    assert 0 < ended < len(candidates)  # both kinds of ending are covered
    # the image is the decoded tokens
    decoded = policy.decode(torch.stack([c.image_tokens for c in candidates]))
    assert all(np.array_equal(np.asarray(a), np.asarray(c.image)) for a, c in zip(decoded, candidates, strict=True))


def test_n_candidates_per_prompt_in_prompt_order(policy):
    out = policy.generate(PROMPTS[:2], think=False, n=3, seed=1, settings=SETTINGS)
    assert [c.prompt for c in out] == [PROMPTS[0]] * 3 + [PROMPTS[1]] * 3
    tokens = torch.stack([c.image_tokens for c in out])
    assert len({tuple(t.tolist()) for t in tokens}) == 6  # each row has its own generator


def test_think_off_draws_without_a_plan(policy, candidates):
    out = policy.generate(PROMPTS, think=False, seed=0, settings=SETTINGS)
    assert all(c.plan is None and c.plan_logprobs.numel() == 0 for c in out)
    assert all(c.image_tokens.shape == (N_IMAGE,) for c in out)
    think_on = torch.stack([c.image_tokens for c in candidates])
    think_off = torch.stack([c.image_tokens for c in out])
    assert not torch.equal(think_on, think_off)  # the context differs ([think] and a plan before boi)


def assert_same_candidates(first, second):
    """Bitwise: plans, tokens, log-probs and images."""
    for a, b in zip(first, second, strict=True):
        assert a.plan == b.plan and a.plan_ids == b.plan_ids and a.boi_sampled == b.boi_sampled
        assert torch.equal(a.image_tokens, b.image_tokens)
        assert torch.equal(a.plan_logprobs, b.plan_logprobs)
        assert torch.equal(a.image_logprobs, b.image_logprobs)
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))


def test_same_seed_is_bitwise_equal_and_seeds_differ(policy, candidates):
    assert_same_candidates(candidates, policy.generate(PROMPTS, think=True, seed=0, settings=SETTINGS))
    other = policy.generate(PROMPTS, think=True, seed=1, settings=SETTINGS)
    assert not torch.equal(
        torch.stack([c.image_tokens for c in candidates]), torch.stack([c.image_tokens for c in other])
    )
    assert [c.plan for c in candidates] != [c.plan for c in other]


@pytest.mark.parametrize("think", [True, False])
def test_teacher_forced_logprobs_equal_the_samplers(policy, think):
    out = policy.generate(PROMPTS, think=think, seed=0, settings=SETTINGS)
    boi_sampled = [c.boi_sampled for c in out]
    if think:
        assert any(boi_sampled) and not all(boi_sampled)
    else:
        assert all(c.plan_ids == [] for c in out)
    image_ids = torch.stack([c.image_tokens for c in out])
    plan_lp, image_lp = policy.logprobs(PROMPTS, [c.plan_ids for c in out], image_ids, think, boi_sampled, SETTINGS)
    assert image_lp.shape == (len(PROMPTS), N_IMAGE)
    assert (image_lp - torch.stack([c.image_logprobs for c in out])).abs().max().item() < 1e-5
    for tf, c in zip(plan_lp, out, strict=True):
        assert tf.shape == c.plan_logprobs.shape == (len(c.plan_ids) + c.boi_sampled,)
        if tf.numel():
            assert (tf - c.plan_logprobs).abs().max().item() < 1e-5
    assert image_lp.requires_grad  # differentiable, for the trainers


def test_a_prompts_candidates_do_not_depend_on_batching(policy):
    together = policy.generate(PROMPTS[:3], think=True, n=2, seed=5, settings=SETTINGS)
    alone = policy.generate(PROMPTS[2:3], think=True, n=2, seed=5, settings=SETTINGS, indices=[2])
    for a, b in zip(together[4:], alone, strict=True):
        assert a.plan == b.plan and torch.equal(a.image_tokens, b.image_tokens)
    shifted = policy.generate(PROMPTS[2:3], think=True, n=2, seed=5, settings=SETTINGS)  # index 0: other seeds
    assert not torch.equal(torch.stack([c.image_tokens for c in shifted]), torch.stack([c.image_tokens for c in alone]))


def test_think_and_draw(policy):
    plans = policy.think(PROMPTS[:2], seed=0, settings=SETTINGS)
    assert plans == [c.plan for c in policy.generate(PROMPTS[:2], seed=0, settings=SETTINGS)]
    records = load_split("test")[:2]
    given = [world_example(r, random.Random(i), 0.0).plan for i, r in enumerate(records)]
    drawn = policy.draw([r["prompt"] for r in records], given, seed=0, settings=SETTINGS)
    assert drawn.shape == (2, N_IMAGE) and drawn.dtype == torch.long
    swapped = policy.draw([r["prompt"] for r in records], given[::-1], seed=0, settings=SETTINGS)
    assert not torch.equal(drawn, swapped)  # drawn after the plan it was given
    with pytest.raises(ThinkdrawError, match="does not know"):
        policy.draw(["a photo of a circle"], ["dog (1,2),(3,4)"], settings=SETTINGS)
    with pytest.raises(PromptError, match="'dog'"):
        policy.generate(["a photo of a dog"], settings=SETTINGS)


def test_decode_gives_world_images(policy):
    tokens = torch.randint(0, TINY_CODEBOOK, (3, N_IMAGE), generator=torch.Generator().manual_seed(0))
    images = policy.decode(tokens)
    assert len(images) == 3
    assert all((i.size, i.mode) == ((64, 64), "RGB") for i in images)
    expected = [to_images(policy.model.model.vqmodel.decode(row[None]))[0] for row in tokens]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, expected, strict=True))
    assert np.array_equal(np.asarray(policy.decode(tokens[2:])[0]), np.asarray(images[2]))  # whatever the batch
    assert not np.array_equal(np.asarray(images[0]), np.asarray(images[1]))


def test_decode_partial_keeps_the_first_tokens_and_blanks_the_rest(policy):
    vq = policy.model.model.vqmodel
    blank = policy.blank_token()
    assert blank == int(encode_images(vq, [render_image([])])[0].mode().values)  # the code of an empty patch
    tokens = torch.randint(0, TINY_CODEBOOK, (2, N_IMAGE), generator=torch.Generator().manual_seed(1))
    tokens[tokens == blank] = (blank + 1) % TINY_CODEBOOK  # so every blanked position really changes
    original = tokens.clone()
    pixels = lambda images: np.stack([np.asarray(i) for i in images])  # noqa: E731

    full = pixels(policy.decode(tokens))
    assert np.array_equal(pixels(policy.decode_partial(tokens, N_IMAGE)), full)
    for step in (0, 20, 63):
        partial = pixels(policy.decode_partial(tokens, step))
        assert torch.equal(tokens, original)  # the caller's tokens are not changed
        expected = tokens.clone()
        expected[:, step:] = blank
        assert np.array_equal(partial, pixels(policy.decode(expected)))
        assert not np.array_equal(partial, full)
        later = tokens.clone()  # tokens after `step` do not matter ...
        later[:, step:] = torch.randint(0, TINY_CODEBOOK, (2, N_IMAGE - step))
        assert np.array_equal(pixels(policy.decode_partial(later, step)), partial)
        if step:  # ... the first `step` do
            earlier = tokens.clone()
            earlier[:, 0] = (earlier[:, 0] + 1) % TINY_CODEBOOK
            assert not np.array_equal(pixels(policy.decode_partial(earlier, step)), partial)
    blank_image = pixels(policy.decode(torch.full_like(tokens, blank)))
    assert np.array_equal(pixels(policy.decode_partial(tokens, 0)), blank_image)


def test_save_and_load_give_identical_generations(policy, candidates, tmp_path):
    policy.save(tmp_path)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in tmp_path.iterdir()}
    loaded = Policy.load(tmp_path)
    assert not loaded.model.training
    assert loaded.special == policy.special and loaded.num_image_tokens == N_IMAGE
    sa, sb = policy.model.state_dict(), loaded.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert_same_candidates(candidates, loaded.generate(PROMPTS, think=True, seed=0, settings=SETTINGS))


def test_new_policies_know_where_numbers_and_positions_are():
    """init_coordinates: a grid number is closest to the position tokens of its own column (and row)."""
    policy = tiny_policy(seed=3)
    grid = 8
    embed = policy.model.model.language_model.get_input_embeddings().weight.detach()
    width = 2 * len(COORDINATE_PERIODS)
    positions = embed[list(policy.special.image_positions)].view(grid, grid, -1)  # [row, column, H]
    for cell in range(grid):
        number = round(cell * PLAN_GRID / grid)  # the left (top) edge of column (row) `cell` on the plan grid
        vector = embed[policy.tokenizer.convert_tokens_to_ids(str(number))]
        by_column = positions[0, :, :width] @ vector[:width]  # [columns]
        by_row = positions[:, 0, width : 2 * width] @ vector[width : 2 * width]  # [rows]
        assert int(by_column.argmax()) == cell and int(by_row.argmax()) == cell


def test_a_tokenizer_with_the_wrong_number_of_positions_is_refused(policy, tmp_path):
    policy.model.save_pretrained(tmp_path)
    build_tokenizer(image_positions=N_IMAGE - 1).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="63 image-position tokens; the model draws 64"):
        Policy.load(tmp_path)


# -- the VQ ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenes():
    rng = random.Random(0)
    return [render_image(random_layout(rng, rng.randint(1, 6))) for _ in range(4)]


def test_a_patch_token_depends_on_that_patch_alone(scenes):
    vq = tiny_vq(seed=3)
    tokens = encode_images(vq, scenes)  # [4, 64]
    assert tokens.shape == (4, N_IMAGE)
    patches = patchify(to_pixels(scenes), 8).flatten(1)  # [4 * 64, 192]
    # each patch encoded alone, one at a time, gives the token it has in its scene
    alone = torch.stack([vq.quantize(vq.quant_conv(vq.encoder(p.view(1, 3, 8, 8))))[2][0] for p in patches[::9]])
    assert torch.equal(alone.flatten(), tokens.flatten()[::9])
    # equal patches anywhere in any scene have equal tokens (the open background above all)
    flat = tokens.flatten()
    for i in range(0, len(patches), 7):
        same = (patches == patches[i]).all(dim=1)
        assert (flat[same] == flat[i]).all()
    background = (patches == patches[0]).all(dim=1) & (patches[0] == patches[0][0]).all()
    assert background.sum() > 100 and flat[background].unique().numel() == 1
    # taking one object out changes the tokens of the patches it covered, and no others
    layout = random_layout(random.Random(1), 4)
    a, b = to_pixels([render_image(layout), render_image(layout[:-1])])
    changed = (patchify(a[None], 8) != patchify(b[None], 8)).flatten(1).any(dim=1)
    ta, tb = encode_pixels(vq, torch.stack([a, b]))
    assert changed.any() and (~changed).any()
    assert torch.equal(ta[~changed], tb[~changed])


def test_init_codebook_gives_each_seen_patch_its_own_code():
    config = world_vq_config(codebook=1024, grid=8)
    config.channel_multiplier = [1, 1, 2, 2]
    torch.manual_seed(0)
    vq = JanusVQVAE(config).eval()
    info = init_codebook(vq, scenes=6, seed=4)
    assert info["patches"] <= 1024 and info["covered"] == 1.0
    assert torch.allclose(vq.quantize.embedding.weight.norm(dim=1), torch.ones(1024), atol=1e-5)
    rng = random.Random(4)  # the scenes init_codebook drew
    scenes = [render_image(random_layout(rng, rng.randint(1, 8))) for _ in range(6)]
    tokens = encode_images(vq, scenes).flatten()
    patches = patchify(to_pixels(scenes), 8).flatten(1)
    distinct, index = torch.unique(patches, dim=0, return_inverse=True)
    assert len(distinct) == info["patches"]
    token_of = {int(i): int(t) for i, t in zip(index, tokens, strict=True)}
    assert all(int(tokens[k]) == token_of[int(index[k])] for k in range(len(tokens)))
    assert len(set(token_of.values())) == len(distinct)  # distinct patches, distinct codes
    assert (tokens == tokens[0]).float().mean() < 1  # not all one code


def test_decode_is_transformers_decode(scenes):
    vq = tiny_vq(seed=3)
    tokens = encode_images(vq, scenes)
    with torch.no_grad():
        decoded = torch.cat([vq.decode(row[None]) for row in tokens])  # transformers' decode, image by image
    assert decoded.shape == (4, 3, 64, 64)
    images = decode_tokens(vq, tokens)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, to_images(decoded), strict=True))


def test_a_whole_image_vq_encodes_through_transformers_encode(scenes):
    config = world_vq_config(codebook=64, grid=8)
    config.patch_local = False  # Janus-Pro's VQs: no flag
    torch.manual_seed(0)
    vq = JanusVQVAE(config).eval()
    with torch.no_grad():
        expected = vq.encode(to_pixels(scenes)).image_tokens.view(4, -1)
    assert torch.equal(encode_images(vq, scenes), expected)


def test_pixels_round_trip(scenes):
    pixels = to_pixels(scenes)
    assert pixels.shape == (4, 3, 64, 64) and pixels.min() >= -1 and pixels.max() <= 1
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(to_images(pixels), scenes, strict=True))
