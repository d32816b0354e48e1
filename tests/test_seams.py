"""The seams later features plug into: a Janus-Pro-shaped checkpoint through the one Policy and the CLI, drawing
after a given plan, the losses module, gradient accumulation and the every-parameter invariant."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from janus_pro_tiny import BOS, IMAGE_TOKENS, PAD, save_tiny_janus_pro
from PIL import Image
from test_cli import assert_one_line_error, invoke
from test_cli_model import model_dir  # noqa: F401  (a pytest fixture: the tiny world model, saved)
from tiny_models import tiny_policy, tiny_vq
from transformers import JanusVQVAE

from thinkdraw.checkpoint import load_model, save_checkpoint
from thinkdraw.configs import TrainPolicyConfig
from thinkdraw.engine.sampling import SamplingSettings
from thinkdraw.policy.formats import REASONING_INSTRUCTION
from thinkdraw.policy.model import Policy, untie_text_head
from thinkdraw.runtime import Runtime
from thinkdraw.trainers import sft
from thinkdraw.trainers.losses import TokenCounts, micro_batches, weighted_cross_entropy
from thinkdraw.world.data import WorldExamples, train_world_policy
from thinkdraw.world.model import new_world_policy
from thinkdraw.world.splits import load_split

torch.set_num_threads(1)

PROMPT = "a photo of a red teddy bear left of a blue bench"


@pytest.fixture(scope="module")
def janus_pro_dir(tmp_path_factory):
    return save_tiny_janus_pro(tmp_path_factory.mktemp("janus_pro") / "model")


# -- one Policy for every Janus -----------------------------------------------------------------------------------


def test_janus_pro_tokens_and_format_come_from_the_checkpoint(janus_pro_dir):
    policy = Policy.load(janus_pro_dir)
    tok = policy.tokenizer
    assert tok.unk_token is None and "<think>" not in tok.get_vocab()
    assert policy.special.bos == tok.convert_tokens_to_ids(BOS)
    assert policy.special.pad == tok.convert_tokens_to_ids(PAD)
    assert policy.special.boi == tok.convert_tokens_to_ids(IMAGE_TOKENS["boi_token"])
    assert policy.special.image_positions is None
    assert (policy.format.name, policy.num_image_tokens, policy.image_size) == ("chat", 16, 32)
    plain = tok.decode(policy.encode(PROMPT, think=False))
    assert plain == f"{BOS}<|User|>: {PROMPT}\n\n<|Assistant|>:"
    thinking = tok.decode(policy.encode(PROMPT, think=True))
    assert thinking == f"{BOS}<|User|>: {PROMPT}\n{REASONING_INSTRUCTION}\n\n<|Assistant|>:"
    assert policy.encode(PROMPT, think=False).count(policy.special.bos) == 1  # the template's bos is not doubled
    grey = policy.decode(torch.full((1, 16), policy.blank_token()))[0]
    assert grey.size == (32, 32)


@pytest.mark.parametrize("think", ["--think", "--no-think"])
def test_janus_pro_checkpoint_through_the_cli(janus_pro_dir, tmp_path, think):
    out = tmp_path / "out.png"
    args = ["generate", "--model", janus_pro_dir, PROMPT, think, "-n", "2", "-o", out, "--threads", "1"]
    if think == "--think":
        args += ["--max-think-tokens", "12"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("[0] plan: " if think == "--think" else "[0] (no plan)")
    assert lines[-1] == f"wrote {out}"
    with Image.open(out) as image:
        assert image.width >= 2 * 256 and image.height >= 256


def test_janus_pro_teacher_forced_logprobs_equal_the_sampler(janus_pro_dir):
    policy = Policy.load(janus_pro_dir)
    policy.model.double()
    settings = SamplingSettings(cfg_scale=3.0, temperature=0.9, top_k=0, max_think_tokens=8, text_temperature=0.8)
    candidates = policy.generate([PROMPT, "a photo of a cat"], think=True, n=2, seed=3, settings=settings)
    plans, images = policy.logprobs(
        [c.prompt for c in candidates],
        [c.plan_ids for c in candidates],
        torch.stack([c.image_tokens for c in candidates]),
        think=True,
        boi_sampled=[c.boi_sampled for c in candidates],
        settings=settings,
    )
    for c, plan in zip(candidates, plans, strict=True):
        assert torch.allclose(plan, c.plan_logprobs, atol=1e-8)
    assert torch.allclose(images, torch.stack([c.image_logprobs for c in candidates]), atol=1e-8)


def test_runtime_defaults_on_a_cpu():
    assert Runtime.create("cpu", "auto") == Runtime("cpu", "float32")
    assert Runtime.create("auto", "bfloat16").dtype == "bfloat16"


# -- drawing after a given plan -------------------------------------------------------------------------------


def test_generate_draws_after_the_given_plan(model_dir, tmp_path):  # noqa: F811
    plan = "red circle (156,234),(438,516); blue star (625,94),(906,375)"
    out = tmp_path / "out.png"
    args = ["generate", "a photo of a red circle and a blue star", "--model", model_dir, "--plan", plan]
    result = invoke(*args, "-n", "2", "-o", out, "--threads", "1", "--cfg-scale", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:2] == [f"[0] plan: {plan}", f"[1] plan: {plan}"]
    # the same as the policy's own draw after that plan
    policy = Policy.load(model_dir)
    drawn = policy.draw(["a photo of a red circle and a blue star"] * 2, [plan] * 2, settings=SamplingSettings(2.0))
    candidates = policy.generate(
        ["a photo of a red circle and a blue star"], n=2, plans=[plan], settings=SamplingSettings(2.0)
    )
    assert torch.equal(torch.stack([c.image_tokens for c in candidates]), drawn)


def test_metadata_with_given_plans(model_dir, tmp_path):  # noqa: F811
    records = load_split("test")[:2]
    plans = ["circle (0,0),(200,200)", "red square (500,500),(800,800); star (0,0),(300,300)"]
    metadata = tmp_path / "m.jsonl"
    metadata.write_text("".join(json.dumps({**r, "plan": p}) + "\n" for r, p in zip(records, plans, strict=True)))
    outdir = tmp_path / "gen"
    args = ["generate", "--metadata", metadata, "--outdir", outdir, "--model", model_dir, "--given-plans"]
    result = invoke(*args, "--images-per-prompt", "2", "--threads", "1", "--cfg-scale", "2")
    assert result.exit_code == 0, result.output
    for i, plan in enumerate(plans):
        assert json.loads((outdir / f"{i:05d}" / "plans.json").read_text()) == [plan, plan]
    metadata.write_text(json.dumps({**records[0], "plan": "circle (0,0)"}) + "\n")
    assert_one_line_error(invoke(*args, "--threads", "1"), "line 1: plan entry 1 is not")
    metadata.write_text(json.dumps(records[0]) + "\n")
    assert_one_line_error(invoke(*args, "--threads", "1"), "line 1 has no 'plan' text")


# -- losses -----------------------------------------------------------------------------------------------------


def test_weighted_cross_entropy_pinned():
    g = torch.Generator().manual_seed(0)
    text_logits = [torch.randn(3, 7, generator=g), torch.randn(2, 7, generator=g)]
    text_targets = [torch.tensor([1, 4, 6]), None]
    image_logits = torch.randn(2, 4, 5, generator=g)
    image_targets = torch.tensor([[0, 1, 2, 3], [4, 0, 1, 2]])
    out = weighted_cross_entropy(text_logits, text_targets, image_logits, image_targets, 2.0, 1.0)
    text_sum = F.cross_entropy(text_logits[0], text_targets[0], reduction="sum")
    image_sum = F.cross_entropy(image_logits.flatten(0, 1), image_targets.flatten(), reduction="sum")
    assert out.loss.item() == pytest.approx((2 * text_sum + image_sum).item() / (2 * 3 + 8), rel=1e-6)
    assert out.loss.item() == pytest.approx(2.0126779, rel=1e-6)  # pinned for this seed
    assert out.metrics == pytest.approx(
        {"loss": out.loss.item(), "text_ce": text_sum.item() / 3, "image_ce": image_sum.item() / 8}
    )
    # shares of a larger batch: divided by its counts, so micro-batches add up
    half = weighted_cross_entropy(
        text_logits[:1], text_targets[:1], image_logits[:1], image_targets[:1], 2.0, 1.0, TokenCounts(3, 8)
    )
    rest = weighted_cross_entropy(
        text_logits[1:], text_targets[1:], image_logits[1:], image_targets[1:], 2.0, 1.0, TokenCounts(3, 8)
    )
    assert (half.loss + rest.loss).item() == pytest.approx(out.loss.item(), rel=1e-6)
    assert half.metrics["image_ce"] + rest.metrics["image_ce"] == pytest.approx(out.metrics["image_ce"])
    assert not math.isclose(half.loss.item(), out.loss.item())


def test_micro_batches():
    assert micro_batches(8, 4) == [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)]
    with pytest.raises(ValueError, match="does not split"):
        micro_batches(8, 3)
    assert_one_line_error(
        invoke("train", "policy", "base", ".", "--batch-size", "8", "--accumulation", "3"), "must divide"
    )


# -- the step loop ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vq_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_vq") / "vq"
    save_checkpoint(folder, tiny_vq(), {"kind": "vq", "step": 0})
    return folder


def base_config(vq_dir, out, **kwargs) -> TrainPolicyConfig:
    args = dict(
        stage="base", init=vq_dir, out=out, steps=2, warmup=1, hidden=64, layers=2, threads=1, lr=3e-3, bf16=False
    )
    return TrainPolicyConfig(**{**args, **kwargs})


def test_batch_8_equals_batch_1_times_accumulation_8(vq_dir, tmp_path, monkeypatch):
    """The same updates, compared where they are made: the summed gradient the optimizer steps on (Adam turns
    float noise in a near-zero gradient into a full-size step, so parameters are compared loosely)."""
    seen: list[list[torch.Tensor]] = []
    step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        seen.append([p.grad.clone() for group in self.param_groups for p in group["params"]])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    whole = train_world_policy(base_config(vq_dir, tmp_path / "a", batch_size=8, accumulation=1), print)
    split = train_world_policy(base_config(vq_dir, tmp_path / "b", batch_size=8, accumulation=8), print)
    assert len(seen) == 4  # two steps each
    for x, y in zip(seen[0], seen[2], strict=True):  # step 0, from the same start
        assert torch.allclose(x, y, atol=1e-8, rtol=1e-4)
    for a, b in zip(whole.model.parameters(), split.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-3)
    logs = [[json.loads(line) for line in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in "ab"]
    for x, y in zip(*logs, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
        assert x["image_ce"] == pytest.approx(y["image_ce"], rel=1e-5)
        assert x["grad_norm"] == pytest.approx(y["grad_norm"], rel=1e-4)


def test_a_tiny_run_lowers_the_loss_and_moves_every_trainable_parameter(vq_dir, tmp_path):
    config = base_config(vq_dir, tmp_path / "run", steps=25, batch_size=4, lr=1e-2, warmup=2)
    initial = new_world_policy(load_model(JanusVQVAE, vq_dir), 64, 2, config.seed)
    before = {n: p.detach().clone() for n, p in initial.model.named_parameters()}
    trained = sft.train_policy(config, WorldExamples("train"), initial, echo=print)
    params = dict(trained.model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert trainable and all(not n.startswith(("model.vqmodel.", "model.vision_model.")) for n in trainable)
    assert not [n for n in trainable if torch.equal(params[n], before[n])]
    frozen = [n for n in params if n not in trainable]
    assert frozen and all(torch.equal(params[n], before[n]) for n in frozen)
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert records[-1]["loss"] < 0.8 * records[0]["loss"], (records[0]["loss"], records[-1]["loss"])


def test_the_sft_loss_reaches_every_trainable_parameter(tmp_path):
    """Not weight decay: one backward gives every trainable tensor a gradient (the untied text head included)."""
    policy = tiny_policy()
    untie_text_head(policy.model)
    params = sft.trainable_parameters(policy.model)
    config = TrainPolicyConfig(stage="sft", init=tmp_path, batch_size=6, think_rate=1.0, drop_rate=0.2, seed=1)
    batch = sft.make_batch(policy, WorldExamples("train"), config, step=0)
    sft.policy_loss(policy, batch, config).loss.backward()
    names = {id(p): n for n, p in policy.model.named_parameters()}
    assert not [names[id(p)] for p in params if p.grad is None or not p.grad.abs().sum() > 0]


def test_guidance_scale_defaults_to_the_checkpoints_own(model_dir, tmp_path):  # noqa: F811
    assert SamplingSettings().resolved().cfg_scale == 5.0 and SamplingSettings(2.5).resolved(3.0).cfg_scale == 2.5
    result = invoke("train", "export", model_dir, tmp_path / "x", "--dtype", "float32", "--cfg-scale", "2")
    assert result.exit_code == 0, result.output
    exported = Policy.load(tmp_path / "x")
    assert exported.guidance_scale == 2.0 and Policy.load(model_dir).guidance_scale is None
    own = exported.generate(["a photo of a red circle"], n=2, seed=4)
    explicit = exported.generate(["a photo of a red circle"], n=2, seed=4, settings=SamplingSettings(cfg_scale=2.0))
    five = exported.generate(["a photo of a red circle"], n=2, seed=4, settings=SamplingSettings(cfg_scale=5.0))
    tokens = [torch.stack([c.image_tokens for c in run]) for run in (own, explicit, five)]
    assert torch.equal(tokens[0], tokens[1]) and not torch.equal(tokens[0], tokens[2])


def test_sampling_after_a_plan_defaults_to_the_checkpoints_own(model_dir, tmp_path):  # noqa: F811
    """An export with --plan-temperature 0 draws greedy images after a plan by default (so two candidates of one
    given plan are the same image), while an explicit temperature still samples, and drawing without a plan (no
    thinking, a rationale) keeps the default temperature 1 and the general guidance scale."""
    assert SamplingSettings().resolved().temperature == 1.0
    assert SamplingSettings().resolved(2.0, 0.0).temperature == 0.0
    assert SamplingSettings(temperature=0.7).resolved(2.0, 0.0).temperature == 0.7
    sampling = ["--cfg-scale", "2", "--plan-cfg-scale", "1", "--plan-temperature", "0"]
    result = invoke("train", "export", model_dir, tmp_path / "x", "--dtype", "float32", *sampling)
    assert result.exit_code == 0, result.output
    exported = Policy.load(tmp_path / "x")
    planned, direct = exported.resolve(None, after_plan=True), exported.resolve(None)
    assert (planned.temperature, planned.cfg_scale, direct.temperature, direct.cfg_scale) == (0.0, 1.0, 1.0, 2.0)
    assert Policy.load(model_dir).resolve(None, after_plan=True).temperature == 1.0  # no defaults: Janus-Pro's
    plan = "red circle (100,100),(400,400)"
    own = exported.draw(["a photo of a red circle"] * 2, [plan] * 2, seed=4)
    greedy = exported.draw(
        ["a photo of a red circle"] * 2, [plan] * 2, seed=9, settings=SamplingSettings(temperature=0)
    )
    sampled = exported.draw(
        ["a photo of a red circle"] * 2, [plan] * 2, seed=4, settings=SamplingSettings(temperature=1)
    )
    assert torch.equal(own[0], own[1]) and torch.equal(own, greedy)
    assert not torch.equal(sampled[0], sampled[1])
    direct = exported.generate(["a photo of a red circle"], think=False, n=2, seed=4)
    assert not torch.equal(direct[0].image_tokens, direct[1].image_tokens)  # no plan: sampled, as before
    bad = invoke("train", "export", model_dir, tmp_path / "y", "--plan-temperature", "-1")
    assert bad.exit_code != 0 and "--plan-temperature must be >= 0" in bad.output
    bad = invoke("train", "export", model_dir, tmp_path / "y", "--plan-cfg-scale", "0")
    assert bad.exit_code != 0 and "--plan-cfg-scale must be >= 1" in bad.output
