"""The trainers on tiny sizes: schedule, checkpoints and logs, exact resumption, training data, losses.

TrainVQConfig takes no channel sizes (only the codebook), so VQ runs use the world VQ's channels with a
64-code codebook from 4 scenes and batch 2; policy runs use a 2 x 64 LM. Interruptions are simulated with a
KeyboardInterrupt raised where a batch is made, which takes the trainers' Ctrl-C path (save, then re-raise).
"""

from __future__ import annotations

import inspect
import json
import math
import random
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from tiny_models import tiny_policy
from transformers import JanusVQVAE

import thinkdraw.trainers.sft as sft
import thinkdraw.world.model as world_model
import thinkdraw.world.train_vq as vq_trainer
from thinkdraw.checkpoint import load_model, read_meta
from thinkdraw.configs import TrainPolicyConfig, TrainVQConfig
from thinkdraw.engine.sampling import SpecialIds, _left_pad, _uncond_ids
from thinkdraw.evaluator.plans import check_plan
from thinkdraw.plan import parse_plan
from thinkdraw.policy.model import Policy, untie_text_head
from thinkdraw.trainers.common import RunLog, cosine_lr
from thinkdraw.world.data import ERRORS, WorldExamples, train_world_policy, world_example
from thinkdraw.world.layout import solve_layout
from thinkdraw.world.render import WorldObject, render
from thinkdraw.world.spec import BACKGROUND
from thinkdraw.world.splits import load_split

torch.set_num_threads(1)

VQ_ARGS = dict(steps=4, batch_size=2, codebook=64, codebook_scenes=4, warmup=2, threads=1)
POLICY_ARGS = dict(steps=4, batch_size=3, warmup=1, threads=1)


def policy_args(stage: str) -> dict:
    """The tiny run's options; the model's size only for stage base (sft takes its init's)."""
    return {**POLICY_ARGS, **(dict(hidden=64, layers=2) if stage == "base" else {})}


def quiet(_: str) -> None:
    pass


def same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, different[:5]


def log_steps(out) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]


def interrupted_at(monkeypatch, module, name: str, stop: int):
    """Make module.name raise KeyboardInterrupt when asked for step `stop` (its `step` argument)."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        if inspect.signature(original).bind(*args, **kwargs).arguments["step"] == stop:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


# -- schedule ---------------------------------------------------------------------------------------------------


def test_cosine_lr():
    peak = 2e-3
    assert cosine_lr(0, 100, 10, peak) == pytest.approx(peak / 10)
    assert cosine_lr(4, 100, 10, peak) == pytest.approx(peak / 2)
    assert cosine_lr(9, 100, 10, peak) == pytest.approx(peak)  # the end of warm-up
    assert cosine_lr(10, 100, 10, peak) == pytest.approx(peak)  # decay starts at the peak
    assert cosine_lr(55, 100, 10, peak) == pytest.approx(peak * 0.55)  # half way: floor + (1 - floor) / 2
    assert cosine_lr(100, 100, 10, peak) == pytest.approx(peak * 0.1)  # the floor
    assert cosine_lr(500, 100, 10, peak) == pytest.approx(peak * 0.1)  # and it stays there
    assert cosine_lr(0, 100, 0, peak) == pytest.approx(peak)  # no warm-up
    values = [cosine_lr(s, 100, 10, peak) for s in range(101)]
    assert all(a < b for a, b in zip(values[:9], values[1:10], strict=True))  # warm-up rises
    assert all(a > b for a, b in zip(values[10:100], values[11:], strict=True))  # decay falls


# -- VQ trainer -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    """An uninterrupted 4-step VQ run, and the model it started from."""
    out = tmp_path_factory.mktemp("vq") / "run"
    torch.manual_seed(0)
    init = JanusVQVAE(world_model.world_vq_config(64))
    world_model.init_codebook(init, scenes=4, seed=0)
    model = vq_trainer.train_vq(TrainVQConfig(out=out, **VQ_ARGS), echo=quiet)
    return out, init, model


def test_train_vq_writes_checkpoint_and_log(vq_run):
    out, init, model = vq_run
    checkpoint = out / "checkpoint"
    names = {p.name for p in checkpoint.iterdir()}
    assert names == {"config.json", "model.safetensors", "thinkdraw.json", "trainer.safetensors"}
    meta = read_meta(checkpoint)
    assert (meta["kind"], meta["step"], meta["run_config"]["steps"]) == ("vq", 4, 4)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 3]  # every 50 steps and the last
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in records)
    assert records[0]["lr"] == pytest.approx(cosine_lr(0, 4, 2, 2e-3))
    saved = load_model(JanusVQVAE, checkpoint)
    same_parameters(saved, model)
    codes = saved.quantize.embedding.weight
    assert torch.allclose(codes.norm(dim=1), torch.ones(64), atol=1e-5)  # unit codes: transformers' lookup agrees
    before = dict(init.named_parameters())
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    decoder = {n for n, _ in model.named_parameters() if n.startswith(("decoder.", "post_quant_conv."))}
    assert changed == decoder  # the decoder learns; the encoder and the codebook (tokens) stay as they began


def test_train_vq_resumes_exactly(vq_run, tmp_path, monkeypatch):
    _, _, uninterrupted = vq_run
    out = tmp_path / "run"
    interrupted_at(monkeypatch, vq_trainer, "scene_batch", stop=2)
    with pytest.raises(KeyboardInterrupt):
        vq_trainer.train_vq(TrainVQConfig(out=out, **VQ_ARGS), echo=quiet)
    assert read_meta(out / "checkpoint")["step"] == 2
    monkeypatch.undo()
    resumed = vq_trainer.train_vq(TrainVQConfig(out=out, resume=True, **VQ_ARGS), echo=quiet)
    same_parameters(resumed, uninterrupted)
    assert read_meta(out / "checkpoint")["step"] == 4
    assert log_steps(out) == [0, 3]  # the resumed run continued the same log


def interrupted_after_step_0(monkeypatch):
    """Ctrl-C after step 0's optimizer step (while its metrics are logged)."""
    original = RunLog.write

    def write(self, record):
        if record["step"] == 0:
            raise KeyboardInterrupt
        original(self, record)

    monkeypatch.setattr(RunLog, "write", write)


def test_train_vq_interrupted_after_an_update_does_not_repeat_it(vq_run, tmp_path, monkeypatch):
    out = tmp_path / "run"
    interrupted_after_step_0(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        vq_trainer.train_vq(TrainVQConfig(out=out, **VQ_ARGS), echo=quiet)
    assert read_meta(out / "checkpoint")["step"] == 1
    monkeypatch.undo()
    resumed = vq_trainer.train_vq(TrainVQConfig(out=out, resume=True, **VQ_ARGS), echo=quiet)
    same_parameters(resumed, vq_run[2])


def test_reconstruction_loss_weighs_object_pixels_more():
    pixels = vq_trainer.to_pixels(render([WorldObject("square", "red", 10, 10, 12)])[None])  # [1, 3, 64, 64]
    assert torch.equal(pixels[0, :, 50, 50], torch.tensor(BACKGROUND) / 127.5 - 1)

    def loss_with_error_at(y: int, x: int, weight: float = 4.0) -> float:
        reconstruction = pixels.clone()
        reconstruction[0, :, y, x] += 0.5
        return vq_trainer.reconstruction_loss(reconstruction, pixels, weight).item()

    on_object, next_to_object = loss_with_error_at(15, 15), loss_with_error_at(15, 9)
    background = loss_with_error_at(50, 50)
    assert on_object == pytest.approx(4 * background, rel=1e-6)
    assert next_to_object == pytest.approx(on_object, rel=1e-6)  # edges count as object (1-pixel margin)
    assert loss_with_error_at(15, 7) == pytest.approx(background, rel=1e-6)  # two pixels out: background
    # with weight 1 it is plain MSE + L1 per element
    reconstruction = pixels + 0.1 * torch.randn(pixels.shape, generator=torch.Generator().manual_seed(0))
    expected = F.mse_loss(reconstruction, pixels) + F.l1_loss(reconstruction, pixels)
    assert vq_trainer.reconstruction_loss(reconstruction, pixels, 1.0).item() == pytest.approx(expected.item(), 1e-6)
    assert vq_trainer.reconstruction_loss(pixels, pixels, 4.0).item() == 0.0


# -- policy trainer ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vq_checkpoint(vq_run):
    return vq_run[0] / "checkpoint"


@pytest.fixture(scope="module")
def base_run(vq_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "run"
    policy = train_world_policy(
        TrainPolicyConfig(stage="base", init=vq_checkpoint, out=out, **policy_args("base")), echo=quiet
    )
    return out, policy


@pytest.fixture(scope="module")
def sft_run(base_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "run"
    config = TrainPolicyConfig(stage="sft", init=base_run[0] / "checkpoint", out=out, **policy_args("sft"))
    return out, train_world_policy(config, echo=quiet)


@pytest.mark.parametrize("stage", ["base", "sft"])
def test_train_policy_writes_checkpoint_and_log(stage, base_run, sft_run, vq_checkpoint):
    out, policy = base_run if stage == "base" else sft_run
    checkpoint = out / "checkpoint"
    assert {"config.json", "model.safetensors", "thinkdraw.json", "trainer.safetensors", "tokenizer.json"} <= {
        p.name for p in checkpoint.iterdir()
    }
    meta = read_meta(checkpoint)
    assert (meta["kind"], meta["step"]) == (f"policy-{stage}", 4)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 3]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in records)
    if stage == "sft":
        assert any(r["text_ce"] > 0 for r in records)  # plans carry loss
    else:
        assert all(r["text_ce"] == 0 for r in records)  # base rows draw directly
    loaded = Policy.load(checkpoint)
    same_parameters(loaded.model, policy.model)
    assert not policy.model.training
    # the VQ stays frozen: the policy's VQ is the VQ checkpoint's
    same_parameters(loaded.model.model.vqmodel, load_model(JanusVQVAE, vq_checkpoint))
    assert loaded.model.config.text_config.hidden_size == 64


def test_base_ships_one_text_matrix_and_sft_two(base_run, sft_run):
    def tensors(out):
        with safe_open(str(out / "checkpoint" / "model.safetensors"), "pt") as f:
            return set(f.keys())

    assert "lm_head.weight" not in tensors(base_run[0])  # tied: the head is the input embedding
    assert "lm_head.weight" in tensors(sft_run[0])
    base, tuned = Policy.load(base_run[0] / "checkpoint").model, Policy.load(sft_run[0] / "checkpoint").model
    assert base.lm_head.weight is base.model.language_model.embed_tokens.weight
    head, embed = tuned.lm_head.weight, tuned.model.language_model.embed_tokens.weight
    assert head is not embed and not torch.equal(head, embed)  # each moved on its own gradient


def test_untie_keeps_the_logits_and_frees_the_head(base_run):
    model = Policy.load(base_run[0] / "checkpoint").model
    embed = model.model.language_model.embed_tokens.weight
    hidden = torch.randn(3, model.config.text_config.hidden_size)
    before = model.lm_head(hidden)
    assert untie_text_head(model) and not untie_text_head(model)
    assert torch.equal(model.lm_head(hidden), before)
    kept = embed.detach().clone()
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    assert torch.equal(embed, kept)


@pytest.mark.parametrize("stage", ["base", "sft"])
def test_train_policy_resumes_exactly(stage, base_run, sft_run, vq_checkpoint, tmp_path, monkeypatch):
    init = vq_checkpoint if stage == "base" else base_run[0] / "checkpoint"
    uninterrupted = (base_run if stage == "base" else sft_run)[1]
    out = tmp_path / "run"
    interrupted_at(monkeypatch, sft, "make_batch", stop=2)
    with pytest.raises(KeyboardInterrupt):
        train_world_policy(TrainPolicyConfig(stage=stage, init=init, out=out, **policy_args(stage)), echo=quiet)
    assert read_meta(out / "checkpoint")["step"] == 2
    monkeypatch.undo()
    config = TrainPolicyConfig(stage=stage, init=init, out=out, resume=True, **policy_args(stage))
    resumed = train_world_policy(config, echo=quiet)
    same_parameters(resumed.model, uninterrupted.model)
    assert log_steps(out) == [0, 3]


def test_train_policy_interrupted_after_an_update_does_not_repeat_it(base_run, vq_checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "run"
    interrupted_after_step_0(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train_world_policy(
            TrainPolicyConfig(stage="base", init=vq_checkpoint, out=out, **policy_args("base")), echo=quiet
        )
    assert read_meta(out / "checkpoint")["step"] == 1
    monkeypatch.undo()
    config = TrainPolicyConfig(stage="base", init=vq_checkpoint, out=out, resume=True, **policy_args("base"))
    same_parameters(train_world_policy(config, echo=quiet).model, base_run[1].model)


def test_resume_completes_a_save_stopped_between_its_renames(base_run, tmp_path):
    """A save moved the old checkpoint to .old and died before its new one (.tmp) took its place."""
    checkpoint = tmp_path / "run" / "checkpoint"
    shutil.copytree(base_run[0] / "checkpoint", checkpoint.with_name("checkpoint.tmp"))
    shutil.copytree(base_run[0] / "checkpoint", checkpoint.with_name("checkpoint.old"))
    (checkpoint.with_name("checkpoint.old") / "thinkdraw.json").write_text('{"step": 1}')
    config = TrainPolicyConfig(stage="base", init=base_run[0] / "checkpoint", out=tmp_path / "run", resume=True)
    assert config.resume and read_meta(checkpoint)["step"] == 4  # the complete new one, not the old one
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["checkpoint"]
    checkpoint.rename(checkpoint.with_name("checkpoint.old"))
    shutil.copytree(base_run[0] / "checkpoint", checkpoint.with_name("checkpoint.tmp"))
    (checkpoint.with_name("checkpoint.tmp") / "thinkdraw.json").unlink()  # died before it was complete
    TrainPolicyConfig(stage="base", init=base_run[0] / "checkpoint", out=tmp_path / "run", resume=True)
    assert read_meta(checkpoint)["step"] == 4 and not checkpoint.with_name("checkpoint.old").exists()


# -- training data ----------------------------------------------------------------------------------------------


def test_right_plans_pass_the_plan_check():
    for i, record in enumerate(load_split("test")):
        example = world_example(record, random.Random(i), error_rate=0.0)
        assert example.error is None
        check = check_plan(parse_plan(example.plan), record)
        assert check.semantic and check.spatial is not False, (record["prompt"], example.plan, check.failures)
        assert example.prompt == record["prompt"]


def kinds(objects) -> list[tuple[str, str]]:
    return sorted((o.shape, o.color) for o in objects)


def test_every_wrong_plan_carries_exactly_one_mistake():
    seen = set()
    for i, record in enumerate(load_split("test")):
        example = world_example(record, random.Random(i), error_rate=1.0)
        right = solve_layout(record, random.Random(i))  # the scene before the mistake (same draws)
        assert example.error in ERRORS
        seen.add(example.error)
        check = check_plan(parse_plan(example.plan), record)
        assert not (check.semantic and check.spatial is not False), (record["prompt"], example.error)
        wrong = list(example.objects)
        if example.error in ("color", "shape"):  # one object changed in that attribute only
            changed = [(a, b) for a, b in zip(right, wrong, strict=True) if a != b]
            assert len(changed) == 1
            a, b = changed[0]
            other = "shape" if example.error == "color" else "color"
            assert getattr(a, example.error) != getattr(b, example.error)
            assert getattr(a, other) == getattr(b, other) and a.box == b.box
        elif example.error == "missing":
            assert len(wrong) == len(right) - 1 and all(o in right for o in wrong)
        elif example.error == "extra":
            assert len(wrong) == len(right) + 1
            added = kinds(wrong)
            for item in kinds(right):
                added.remove(item)
            assert added[0][0] in {o.shape for o in right}  # one more of a shape already there
        else:  # misplaced: the same objects elsewhere
            assert kinds(wrong) == kinds(right) and sorted(o.box for o in wrong) != sorted(o.box for o in right)
    assert seen == set(ERRORS)


@pytest.fixture(scope="module")
def policy():
    return tiny_policy()


def batch_for(policy, tmp_path, drop_rate: float, stage: str = "sft", batch_size: int = 16):
    config = TrainPolicyConfig(stage=stage, init=tmp_path, batch_size=batch_size, drop_rate=drop_rate, seed=3)
    return sft.make_batch(policy, WorldExamples("train", config.error_rate), config, step=5)


def test_dropped_rows_are_pads_exactly_as_the_engine_builds_them(policy, tmp_path):
    kept, dropped = batch_for(policy, tmp_path, 0.0), batch_for(policy, tmp_path, 1.0)
    ids = policy.special
    assert torch.equal(kept.image_ids, dropped.image_ids)  # same examples: only the text is dropped
    assert not dropped.text_rows.count(True) and kept.text_rows.count(True) > 0  # sft: most rows think
    special = SpecialIds(pad=ids.pad, bos=ids.bos, boi=ids.boi)  # the engine's view, without positions
    for context, plan, used in zip(kept.contexts, kept.plans, kept.text_rows, strict=True):
        assert ids.pad not in context + plan and used == bool(plan)
    for i, (context, plan) in enumerate(zip(dropped.contexts, dropped.plans, strict=True)):
        assert context[0] == ids.bos and set(context[1:] + plan) <= {ids.pad}
        assert (len(context), len(plan)) == (len(kept.contexts[i]), len(kept.plans[i]))
        full = kept.contexts[i] + kept.plans[i] + [ids.boi]
        seq, mask = _left_pad([full], ids.pad, torch.device("cpu"))
        assert _uncond_ids(seq, mask, special)[0].tolist() == context + plan + [ids.boi]


def test_batch_shares(policy, tmp_path):
    base = batch_for(policy, tmp_path, 0.1, stage="base", batch_size=64)
    assert base.plans == [[]] * 64 and not any(base.text_rows)  # base never thinks
    assert all(c[-1] != policy.format.think for c in base.contexts)
    dropped = sum(set(c[1:]) == {policy.special.pad} for c in base.contexts)
    assert 1 <= dropped <= 15  # about 10% of 64
    assert base.image_ids.shape == (64, 64)
