"""GRPO on tiny policies: the ratio starts at 1 (CFG on or off), rewards go up, None rewards stay out of the
baselines, non-finite values stop the run, resumption is exact, LoRA trains only its adapters.

The easy scripted reward: the share of the plan's words that are words (not numbers or brackets). An untrained
tiny policy writes mostly coordinates (about 1,000 of its 1,100 writable tokens), so it starts near 0.02 and
learns in a few dozen updates to write words.
"""

from __future__ import annotations

import inspect
import json
import math

import pytest
import torch
from safetensors import safe_open
from test_cli_model import no_progress_bars  # noqa: F401 (a fixture)
from tiny_models import tiny_policy
from typer.testing import CliRunner

import thinkdraw.trainers.grpo as grpo
import thinkdraw.trainers.rollouts as rollouts
from thinkdraw.checkpoint import read_meta
from thinkdraw.cli.main import app
from thinkdraw.configs import TrainGRPOConfig
from thinkdraw.errors import ThinkdrawError
from thinkdraw.policy.model import Policy
from thinkdraw.rewards import Sample, Score
from thinkdraw.trainers.common import RunLog
from thinkdraw.trainers.losses import LossOutput, group_advantages
from thinkdraw.world.data import train_world_grpo
from thinkdraw.world.registry import SHIPPED_MODELS
from thinkdraw.world.splits import load_split

torch.set_num_threads(1)

RECORDS = load_split("train")[:60]
FROZEN = ("model.vqmodel.", "model.vision_model.", "model.aligner.")


def quiet(_: str) -> None:
    pass


def words(samples) -> list[Score]:
    """The share of the plan's words that are words."""
    scores = []
    for s in samples:
        tokens = s.reasoning.split()
        scores.append(Score(sum(t.isalpha() for t in tokens) / max(1, len(tokens)), "words"))
    return scores


@pytest.fixture(scope="module")
def init(tmp_path_factory):
    folder = tmp_path_factory.mktemp("init") / "policy"
    tiny_policy().save(folder)
    return folder


def config_for(init, out, **changes) -> TrainGRPOConfig:
    args = dict(
        steps=6,
        prompts_per_batch=2,
        group_size=4,
        lr=1e-2,
        warmup=0,
        max_think_tokens=8,
        save_every=2,
        device="cpu",
        threads=1,
    )
    return TrainGRPOConfig(init=init, out=out, **{**args, **changes})


def records_of(out) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def updates(out) -> list[dict]:
    return [r for r in records_of(out) if "skipped" not in r]


def same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, different[:5]


# -- config -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(group_size=1), "at least 2 candidates"),
        (dict(level="word"), "choose token or sequence"),
        (dict(temperature=0.0), "must be positive"),
        (dict(entropy_image_target=5.0), "--entropy-image-target is not used without --entropy"),
        (dict(judge="other"), "--judge is not used by the reward 'geneval'"),
        (dict(lora_alpha=8.0), "--lora-alpha is not used without --lora-rank"),
        (dict(accumulation=9), "choose 1 to 8"),
        (dict(think=False, reasoning="rationale"), "--reasoning, --max-think-tokens are not used with --no-think"),
        (dict(held_out_prompts=8), "--held-out-prompts is not used without --held-out-every"),
        (dict(plan_only=True), "--plan-only draws no image: the reward 'geneval' must read the plan alone"),
        (dict(plan_only=True, reward="plan", reasoning="rationale"), "needs thinking in the plan format"),
    ],
)
def test_config_fails_fast(init, tmp_path, changes, message):
    with pytest.raises(ThinkdrawError, match=message):
        config_for(init, tmp_path, **changes)


def test_judged_rewards_take_a_judge(init, tmp_path):
    assert config_for(init, tmp_path, reward="0.5*pi+0.5*geneval", judge="other").needs_judge
    assert not config_for(init, tmp_path, reward="geneval").needs_judge


def test_cli_runs_the_world_entry_and_stops_in_one_line(init, tmp_path, no_progress_bars):  # noqa: F811
    """geneval over the world detector: an untrained policy draws nothing it accepts, so every group is equal."""
    result = CliRunner().invoke(
        app,
        ["train", "grpo", str(init), "--out", str(tmp_path / "run"), "--steps", "1", "--prompts-per-batch", "2"]
        + ["--group-size", "2", "--max-think-tokens", "2", "--max-skipped", "1", "--device", "cpu", "--threads", "1"],
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "2 batches in a row without signal" in lines[0], result.stderr
    skipped = records_of(tmp_path / "run")
    assert [(r["batch"], r["skipped"], r["reward_mean"], r["groups_kept"]) for r in skipped] == [
        (0, 1, 0, 0),
        (1, 1, 0, 0),
    ]
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_a_run_that_loses_its_signal_saves_the_updates_taken(init, tmp_path):
    calls = []

    def fading(samples) -> list[Score]:  # signal for the first batch, then every group equal
        calls.append(len(samples))
        return words(samples) if len(calls) == 1 else [Score(0.5, "flat") for _ in samples]

    config = config_for(init, tmp_path / "run", steps=6, updates_per_batch=2, save_every=100, max_skipped=1)
    with pytest.raises(ThinkdrawError, match=r"without signal.*\(the 2 updates taken are saved\)"):
        grpo.train_grpo(config, RECORDS, fading, echo=quiet)
    assert read_meta(tmp_path / "run" / "checkpoint")["step"] == 2


# -- the ratio starts at 1 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg_scale", [1.0, 2.0])
def test_old_logps_are_the_teacher_forced_ones_at_the_start(init, tmp_path, cfg_scale):
    config = config_for(init, tmp_path / "run", cfg_scale=cfg_scale, steps=1, updates_per_batch=1)
    policy = Policy.load(init)
    batch = grpo.make_rollouts(policy, RECORDS, words, config, index=0, step=0)
    assert len(batch.prompts) > 0 and batch.mask[:, : batch.width].sum() > 0  # plan tokens count too
    with torch.no_grad():
        fresh = grpo.token_logprobs(policy, batch, config).logps
        plans, images = policy.logprobs(
            batch.prompts, batch.plan_ids, batch.image_ids, True, batch.boi_sampled, config.sampling
        )
    public = rollouts.pack(plans, images, batch.width)  # the Policy's own teacher forcing, laid out the same way
    for logps in (fresh, public):
        assert ((logps - batch.old_logps) * batch.mask).abs().max().item() < 1e-4
    grpo.train_grpo(config, RECORDS, words, echo=quiet)
    first = updates(tmp_path / "run")[0]
    assert first["clip_fraction"] == 0 and first["ratio_max"] < 1e-4


# -- held-out scores -------------------------------------------------------------------------------------------


def test_held_out_prompts_are_scored_every_so_many_updates(init, tmp_path):
    def half(samples):
        return [Score(0.5, "half") for _ in samples]

    held = rollouts.HeldOut(RECORDS[:4], {"reward": words, "half": half}, every=2)
    config = config_for(init, tmp_path / "run", steps=5, save_every=10)
    grpo.train_grpo(config, RECORDS[4:], words, echo=quiet, held_out=held)
    logged = [r for r in updates(tmp_path / "run") if "held_reward" in r]
    assert [r["step"] for r in logged] == [0, 2, 4] and all(r["held_half"] == 0.5 for r in logged)
    drawn = Policy.load(init).generate([r["prompt"] for r in RECORDS[:4]], True, 1, config.seed, config.sampling)
    expected = words([Sample(r, c.image, c.plan) for r, c in zip(RECORDS[:4], drawn, strict=True)])
    assert logged[0]["held_reward"] == pytest.approx(sum(s.value for s in expected) / 4)


def test_gradient_checkpointing_recomputes_and_changes_nothing_else(init, tmp_path, monkeypatch):
    import transformers.modeling_utils

    calls, original = [], transformers.modeling_utils.checkpoint

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.modeling_utils, "checkpoint", counted)
    plain = grpo.train_grpo(config_for(init, tmp_path / "a", steps=2, save_every=10), RECORDS, words, echo=quiet)
    assert not calls
    config = config_for(init, tmp_path / "b", steps=2, save_every=10, gradient_checkpointing=True)
    checkpointed = grpo.train_grpo(config, RECORDS, words, echo=quiet)
    assert len(calls) == 2 * 2  # each of the 2 layers, in each of the 2 updates' loss forwards
    for a, b in zip(updates(tmp_path / "a"), updates(tmp_path / "b"), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6) and a["grad_norm"] == pytest.approx(
            b["grad_norm"], rel=1e-5
        )
    for a, b in zip(plain.model.parameters(), checkpointed.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


# -- learning ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def learning_run(init, tmp_path_factory):
    out = tmp_path_factory.mktemp("learn") / "run"
    policy = grpo.train_grpo(
        config_for(init, out, steps=24, prompts_per_batch=4, group_size=8, save_every=100), RECORDS, words, echo=quiet
    )
    return out, policy


def test_reward_goes_up(learning_run):
    out, _ = learning_run
    logged = updates(out)
    assert [r["step"] for r in logged] == list(range(24))
    first = sum(r["reward_mean"] for r in logged[:4]) / 4  # the first two batches (two updates each)
    last = sum(r["reward_mean"] for r in logged[-4:]) / 4
    assert first < 0.1 and last > first + 0.2, (first, last)  # 0.05 -> 0.35 on the CPU
    keys = {"reward_mean", "reward_std", "reward_none", "groups_kept", "loss", "kl", "clip_fraction", "lr"}
    keys |= {"entropy_text", "entropy_image", "coef_text", "coef_image", "grad_norm", "ratio_max"}
    assert all(keys <= r.keys() and all(math.isfinite(r[k]) for k in keys) for r in logged)


def test_a_run_moves_every_trainable_parameter_and_no_frozen_one(init, learning_run):
    out, policy = learning_run
    start = dict(Policy.load(init).model.named_parameters())
    moved = {n for n, p in policy.model.named_parameters() if not torch.equal(p, start[n])}
    trainable = {n for n in start if not n.startswith(FROZEN)}
    assert moved == trainable
    meta = read_meta(out / "checkpoint")
    assert (meta["kind"], meta["step"], meta["grpo"]["batch"]) == ("policy-grpo", 24, None)  # at a batch's end
    same_parameters(Policy.load(out / "checkpoint").model, policy.model)


def test_plan_only_draws_no_image_and_trains_the_plan_alone(init, tmp_path):
    seen = []

    def words_seen(samples):
        seen.extend(s.image for s in samples)
        return words(samples)

    config = config_for(
        init, tmp_path / "run", plan_only=True, reward="plan", steps=24, prompts_per_batch=4, group_size=8
    )
    policy = Policy.load(init)
    batch = grpo.make_rollouts(policy, RECORDS, words_seen, config, index=0, step=0)
    W = batch.width
    assert batch.image_ids.shape[1] == 1 and batch.mask[:, W:].sum() == 0 and batch.mask[:, :W].sum() > 0
    with torch.no_grad():
        fresh = grpo.token_logprobs(policy, batch, config)
    assert ((fresh.logps - batch.old_logps) * batch.mask).abs().max().item() < 1e-4
    assert fresh.image_entropy.item() == 0 and fresh.text_entropy.item() > 0
    trained = grpo.train_grpo(config, RECORDS, words_seen, echo=quiet)
    assert len(seen) > 24 * 16 and all(image is None for image in seen)
    logged = updates(tmp_path / "run")
    first = sum(r["reward_mean"] for r in logged[:4]) / 4
    last = sum(r["reward_mean"] for r in logged[-4:]) / 4
    assert last > first + 0.2, (first, last)
    start = dict(Policy.load(init).model.named_parameters())
    moved = {n for n, p in trained.model.named_parameters() if not torch.equal(p, start[n])}
    image_only = ("model.generation_aligner.", "model.generation_embeddings.", "model.generation_head.")
    assert moved == {n for n in start if not n.startswith(FROZEN + image_only)}


def test_none_rewards_leave_the_baseline(init, tmp_path):
    given: list[float | None] = []

    def some_unscorable(samples):
        scores = words(samples)
        scores = [Score(None, "n/a") if i % 3 == 0 else s for i, s in enumerate(scores)]
        scores[4:8] = [Score(None, "n/a")] * 3 + [Score(0.5)]  # group 1: one reward left, no baseline: dropped
        given[:] = [s.value for s in scores]
        return scores

    config = config_for(init, tmp_path, prompts_per_batch=3)
    batch = grpo.make_rollouts(Policy.load(init), RECORDS, some_unscorable, config, index=0, step=0)
    expected = group_advantages(given, 4)
    zeroed = group_advantages([0.0 if v is None else v for v in given], 4)
    assert expected != zeroed  # the test means something: scoring them 0 would move the baselines
    assert expected[4:8] == [None] * 4
    assert batch.advantages.tolist() == pytest.approx([a for a in expected if a is not None])
    assert len(batch.prompts) == sum(a is not None for a in expected) < sum(v is not None for v in given)
    assert batch.stats["reward_none"] == pytest.approx(sum(v is None for v in given) / 12)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_accumulation_gives_the_same_update(init, tmp_path, level):
    logged = []
    for accumulation in (1, 3):
        out = tmp_path / f"acc{accumulation}"
        config = config_for(init, out, steps=1, accumulation=accumulation, entropy=True, kl_beta=0.1, level=level)
        grpo.train_grpo(config, RECORDS, words, echo=quiet)
        logged.append(updates(out)[0])
    for key in ("loss", "kl", "clip_fraction", "entropy_text", "entropy_image", "grad_norm"):
        assert logged[1][key] == pytest.approx(logged[0][key], rel=1e-5, abs=1e-7), key


# -- LoRA -------------------------------------------------------------------------------------------------------


def test_lora_trains_only_the_adapters_and_saves_merged_weights(init, tmp_path):
    config = config_for(init, tmp_path / "run", steps=4, lora_rank=4, save_every=100)
    torch.manual_seed(config.seed)  # as train_grpo starts: the adapters' initial values
    start = Policy.load(init)
    rollouts.add_lora(start, config)
    before = {n: p.detach().clone() for n, p in start.model.named_parameters()}
    policy = grpo.train_grpo(config, RECORDS, words, echo=quiet)
    moved = {n for n, p in policy.model.named_parameters() if not torch.equal(p, before[n])}
    adapters = {n for n in before if ".lora_" in n}
    assert moved == adapters and len(adapters) == 2 * 7 * 2  # A and B on 7 projections in each of 2 layers
    checkpoint = tmp_path / "run" / "checkpoint"
    merged = Policy.load(checkpoint)  # a plain policy: strict loading, no adapter names
    base = dict(Policy.load(init).model.named_parameters())
    changed = {n for n, p in merged.model.named_parameters() if not torch.equal(p, base[n])}
    assert changed == {n.replace(".base_layer.", ".") for n in before if ".base_layer." in n}
    batch = grpo.make_rollouts(merged, RECORDS, words, config, index=50, step=0)
    with torch.no_grad():
        live = grpo.token_logprobs(policy, batch, config).logps
    assert ((live - batch.old_logps) * batch.mask).abs().max().item() < 1e-4  # merged samples as the live model
    with safe_open(str(checkpoint / "trainer.safetensors"), "pt") as f:
        assert {k.removeprefix("extra.") for k in f.keys() if ".lora_" in k} == {f"lora.{n}" for n in adapters}


# -- exact resumption and non-finite values ---------------------------------------------------------------------


def resume_config(init, out, lora: bool, **changes) -> TrainGRPOConfig:
    extra = dict(lora_rank=4) if lora else {}
    return config_for(init, out, entropy=True, entropy_text_target=8.0, kl_beta=0.1, accumulation=2, **extra, **changes)


def flat_batch_reward(config: TrainGRPOConfig):
    """The words reward, but equal (0.5) for the prompts of batch 1: that batch carries no signal."""
    flat = {r["prompt"] for r in grpo.batch_records(RECORDS, config, 1)[0]}

    def reward(samples):
        return [Score(0.5) if s.prompt in flat else w for s, w in zip(samples, words(samples), strict=True)]

    return reward


@pytest.fixture(scope="module", params=[False, True], ids=["full", "lora"])
def uninterrupted(request, init, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    config = resume_config(init, out, request.param)
    policy = grpo.train_grpo(config, RECORDS, flat_batch_reward(config), echo=quiet)
    return request.param, out, policy


def test_a_batch_without_signal_is_skipped_without_an_update(uninterrupted):
    _, out, _ = uninterrupted
    logged = records_of(out)
    assert [(r["step"], r["batch"], "skipped" in r) for r in logged] == [
        (0, 0, False), (1, 0, False), (2, 1, True), (2, 2, False), (3, 2, False), (4, 3, False), (5, 3, False),
    ]  # fmt: skip
    assert logged[2]["groups_kept"] == 0
    coefficients = [r["coef_text"] for r in logged if "skipped" not in r]
    assert coefficients == pytest.approx([0, 1e-4, 2e-4, 3e-4, 4e-4, 5e-4])  # adapted after every update


def interrupt(monkeypatch, where: str, at: int, module=grpo, maker: str = "make_rollouts", key: str = "index") -> None:
    """Ctrl-C while `module.maker` makes batch `at` (its argument `key`: "batch"), or after update `at` while it
    is logged ("update")."""
    if where == "batch":
        original = getattr(module, maker)

        def make(*args, **kwargs):
            if inspect.signature(original).bind(*args, **kwargs).arguments[key] == at:
                raise KeyboardInterrupt
            return original(*args, **kwargs)

        monkeypatch.setattr(module, maker, make)
    else:
        write = RunLog.write

        def stop(self, record):
            if record["step"] == at and "lr" in record:
                raise KeyboardInterrupt
            write(self, record)

        monkeypatch.setattr(RunLog, "write", stop)


@pytest.mark.parametrize("where, at, saved", [("batch", 2, 2), ("update", 2, 3)], ids=["at-a-batch", "mid-batch"])
def test_resume_equals_an_uninterrupted_run(uninterrupted, init, tmp_path, monkeypatch, where, at, saved):
    lora, whole, expected = uninterrupted
    out = tmp_path / "run"
    config = resume_config(init, out, lora)
    interrupt(monkeypatch, where, at)
    with pytest.raises(KeyboardInterrupt):
        grpo.train_grpo(config, RECORDS, flat_batch_reward(config), echo=quiet)
    monkeypatch.undo()
    meta = read_meta(out / "checkpoint")
    assert meta["step"] == saved and (meta["grpo"]["batch"] is not None) == (where == "update")
    config = resume_config(init, out, lora, resume=True)
    resumed = grpo.train_grpo(config, RECORDS, flat_batch_reward(config), echo=quiet)
    same_parameters(resumed.model, expected.model)
    assert read_meta(out / "checkpoint")["grpo"] == read_meta(whole / "checkpoint")["grpo"]
    assert updates(out)[-1] == {**updates(whole)[-1], "minutes": updates(out)[-1]["minutes"]}


@pytest.mark.parametrize("uninterrupted", [False], ids=["full"], indirect=True)
def test_a_nan_reward_stops_and_the_last_checkpoint_resumes_exactly(uninterrupted, init, tmp_path):
    lora, _, expected = uninterrupted
    out = tmp_path / "run"
    config = resume_config(init, out, lora)
    good, calls = flat_batch_reward(config), []

    def breaks_at_batch_3(samples):
        calls.append(1)
        scores = good(samples)
        return scores if len(calls) < 4 else scores[:5] + [Score(float("nan"), "broken")] + scores[6:]

    with pytest.raises(grpo.RunError, match=r"step 4: the reward is nan \(non-finite\) for rollout 5 of batch 3"):
        grpo.train_grpo(config, RECORDS, breaks_at_batch_3, echo=quiet)
    assert read_meta(out / "checkpoint")["step"] == 4
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint", "log.jsonl"]
    resumed = grpo.train_grpo(resume_config(init, out, lora, resume=True), RECORDS, good, echo=quiet)
    same_parameters(resumed.model, expected.model)


def test_a_nan_loss_stops_with_what_and_where(init, tmp_path, monkeypatch):
    original, calls = grpo.grpo_loss, []

    def broken(*args, **kwargs):  # the loss of update 1 (the second) is nan
        out = original(*args, **kwargs)
        calls.append(1)
        return LossOutput(out.loss * float("nan"), out.metrics) if len(calls) > 1 else out

    monkeypatch.setattr(grpo, "grpo_loss", broken)
    with pytest.raises(grpo.RunError, match="step 1: the GRPO loss is non-finite"):
        grpo.train_grpo(config_for(init, tmp_path / "run", steps=2, save_every=1), RECORDS, words, echo=quiet)
    assert read_meta(tmp_path / "run" / "checkpoint")["step"] == 1


# -- the world entry point with the real geneval reward ---------------------------------------------------------


def test_world_grpo_with_the_geneval_reward(tmp_path):
    """The shipped world policy, rewarded by GenEval's rules over the world detector."""
    config = TrainGRPOConfig(
        init=SHIPPED_MODELS["sft"],
        out=tmp_path / "run",
        steps=2,
        prompts_per_batch=2,
        group_size=4,
        seed=1,
        device="cpu",
        threads=1,
    )
    train_world_grpo(config, echo=quiet)
    logged = updates(tmp_path / "run")
    assert [r["step"] for r in logged] == [0, 1] and logged[0]["groups_kept"] >= 1
    assert 0 < logged[0]["reward_mean"] < 1 and logged[0]["ratio_max"] < 1e-4
    meta = read_meta(tmp_path / "run" / "checkpoint")
    assert (meta["kind"], meta["environment"], meta["step"]) == ("policy-grpo", "world", 2)
