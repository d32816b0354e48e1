"""DPO and iterative DPO on tiny policies: each round starts at log 2 against its own reference, the ranked
reward goes up, resumption is exact, each round's weights are kept, non-finite losses stop the run.

The scripted reward is test_grpo's: the share of the plan's words that are words (an untrained tiny policy
writes mostly coordinates)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_cli_model import no_progress_bars  # noqa: F401 (a fixture)
from test_grpo import RECORDS, init, interrupt, quiet, records_of, same_parameters, words  # noqa: F401 (init)
from typer.testing import CliRunner

import thinkdraw.trainers.dpo as dpo
from thinkdraw.checkpoint import read_meta
from thinkdraw.cli.main import app
from thinkdraw.configs import TrainDPOConfig
from thinkdraw.errors import ThinkdrawError
from thinkdraw.policy.model import Policy
from thinkdraw.rewards import Score
from thinkdraw.trainers.losses import LossOutput
from thinkdraw.world.data import train_world_dpo, world_run
from thinkdraw.world.registry import SHIPPED_MODELS

torch.set_num_threads(1)


def config_for(init, out, **changes) -> TrainDPOConfig:  # noqa: F811
    args = dict(
        rounds=2,
        prompts_per_round=6,
        candidates=3,
        steps_per_round=4,
        batch_size=4,
        lr=1e-2,
        warmup=0,
        max_think_tokens=8,
        save_every=2,
        sample_batch=5,  # chunks that split prompts' samples: they must not depend on it
        device="cpu",
        threads=1,
    )
    return TrainDPOConfig(init=init, out=out, **{**args, **changes})


def updates(out) -> list[dict]:
    return [r for r in records_of(out) if "sampled" not in r]


# -- config and pairs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(candidates=1), "at least 2 samples"),
        (dict(save_every=3), "--save-every 3 must divide --steps-per-round 4"),
        (dict(accumulation=5), "choose 1 to 4"),
        (dict(beta=0.0), "--beta must be positive"),
        (dict(reward="geneval", judge="other"), "--judge is not used by the reward 'geneval'"),
        (dict(think=False, reasoning="rationale"), "--reasoning, --max-think-tokens are not used with --no-think"),
    ],
)
def test_config_fails_fast(init, tmp_path, changes, message):  # noqa: F811
    with pytest.raises(ThinkdrawError, match=message):
        config_for(init, tmp_path, **changes)


def test_steps_are_rounds_times_steps_per_round(init, tmp_path):  # noqa: F811
    assert config_for(init, tmp_path, rounds=3, steps_per_round=4).steps == 12


@pytest.mark.parametrize(
    "values, pair",
    [
        ([0.2, None, 0.9, 0.9, 0.2], (2, 0)),  # the first best and the first worst
        ([0.0, 1.0], (1, 0)),
        ([0.5, 0.5, 0.5], None),  # a tie ranks nothing
        ([None, 1.0, None], None),  # one known score ranks nothing
    ],
)
def test_a_prompts_pair_is_its_best_and_its_worst(values, pair):
    assert dpo.pick_pair(values) == pair


def test_pairs_do_not_depend_on_how_samples_are_batched(init, tmp_path):  # noqa: F811
    policy = Policy.load(init)
    a = dpo.make_pairs(policy, RECORDS, words, config_for(init, tmp_path, sample_batch=5), round=0, step=0)
    b = dpo.make_pairs(policy, RECORDS, words, config_for(init, tmp_path, sample_batch=64), round=0, step=0)
    assert a.prompts == b.prompts and a.plan_ids == b.plan_ids and torch.equal(a.image_ids, b.image_ids)
    assert torch.allclose(a.ref_logps, b.ref_logps, atol=1e-5)
    P = len(a.prompts) // 2
    assert P >= 2 and a.prompts[:P] == a.prompts[P:]  # chosen rows, then the rejected row of each
    assert a.advantages.tolist() == [1.0] * P + [-1.0] * P
    assert a.stats["chosen_mean"] > a.stats["rejected_mean"]


def test_image_only_pairs_count_no_plan_token(init, tmp_path):  # noqa: F811
    config = config_for(init, tmp_path, plan_tokens=False)
    pairs = dpo.make_pairs(Policy.load(init), RECORDS, words, config, round=0, step=0)
    W = pairs.width
    assert W > 0 and pairs.mask[:, :W].sum() == 0 and bool((pairs.mask[:, W:] == 1).all())


# -- a run ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def whole(init, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("whole") / "run"
    config = config_for(init, out, accumulation=2)
    return out, dpo.train_dpo(config, RECORDS, words, echo=quiet)


def test_each_round_starts_at_log_2_against_its_own_reference(whole):
    out, _ = whole
    logged = updates(out)
    assert [r["step"] for r in logged] == list(range(8))
    for r in logged:
        first = r["step"] % 4 == 0  # the policy is the round's reference: every margin is 0
        assert (abs(r["loss"] - math.log(2)) < 1e-5) == first, r
        assert (abs(r["margin"]) < 1e-4) == first, r
    assert logged[3]["margin"] > 0 and logged[3]["reward_accuracy"] > 0.5  # it learns to prefer the chosen
    sampled = [r for r in records_of(out) if "sampled" in r]
    assert [(r["step"], r["round"]) for r in sampled] == [(0, 0), (4, 1)]


def test_each_rounds_weights_are_kept(whole):
    out, policy = whole
    assert sorted(p.name for p in (out / "rounds").iterdir()) == ["1", "2"]
    same_parameters(Policy.load(out / "rounds" / "2").model, policy.model)
    first = Policy.load(out / "rounds" / "1").model.state_dict()
    assert any(not torch.equal(t, first[k]) for k, t in policy.model.state_dict().items())
    assert read_meta(out / "rounds" / "1")["step"] == 4


def test_iterative_dpo_raises_the_ranked_reward(init, tmp_path):  # noqa: F811
    config = config_for(init, tmp_path / "run", rounds=4, steps_per_round=8, save_every=8, prompts_per_round=12)
    dpo.train_dpo(config, RECORDS, words, echo=quiet)
    ranked = [r["rank_mean"] for r in records_of(tmp_path / "run") if "sampled" in r]
    assert len(ranked) == 4 and ranked[3] > ranked[0] + 0.1, ranked


# -- exact resumption and non-finite values ---------------------------------------------------------------------


@pytest.mark.parametrize("where, at, saved", [("batch", 1, 4), ("update", 5, 6)], ids=["at-a-round", "mid-round"])
def test_resume_equals_an_uninterrupted_run(whole, init, tmp_path, monkeypatch, where, at, saved):  # noqa: F811
    out_whole, expected = whole
    out = tmp_path / "run"
    interrupt(monkeypatch, where, at, dpo, "make_pairs", "round")  # a "batch" here: a round's pairs
    with pytest.raises(KeyboardInterrupt):
        dpo.train_dpo(config_for(init, out, accumulation=2), RECORDS, words, echo=quiet)
    monkeypatch.undo()
    meta = read_meta(out / "checkpoint")
    assert meta["step"] == saved and (meta["dpo"]["pairs"] is not None) == (where == "update")
    resumed = dpo.train_dpo(config_for(init, out, accumulation=2, resume=True), RECORDS, words, echo=quiet)
    same_parameters(resumed.model, expected.model)
    last, expected_last = updates(out)[-1], updates(out_whole)[-1]
    assert last == {**expected_last, "minutes": last["minutes"]}


def test_a_nan_loss_stops_with_what_and_where(init, tmp_path, monkeypatch):  # noqa: F811
    original, calls = dpo.dpo_loss, []

    def broken(*args, **kwargs):  # the loss of update 1 (the second) is nan
        out = original(*args, **kwargs)
        calls.append(1)
        return LossOutput(out.loss * float("nan"), out.metrics) if len(calls) > 1 else out

    monkeypatch.setattr(dpo, "dpo_loss", broken)
    config = config_for(init, tmp_path / "run", rounds=1, save_every=1)
    with pytest.raises(dpo.RunError, match="step 1: the DPO loss is non-finite"):
        dpo.train_dpo(config, RECORDS, words, echo=quiet)
    assert read_meta(tmp_path / "run" / "checkpoint")["step"] == 1
    assert not (tmp_path / "run" / "rounds").exists()


def test_lora_trains_only_the_adapters(init, tmp_path):  # noqa: F811
    config = config_for(init, tmp_path / "run", rounds=1, steps_per_round=2, lora_rank=4)
    base = Policy.load(init).model.state_dict()
    policy = dpo.train_dpo(config, RECORDS, words, echo=quiet)
    trainable = {n for n, p in policy.model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    merged = Policy.load(tmp_path / "run" / "checkpoint").model.state_dict()
    changed = {k for k, t in merged.items() if not torch.equal(t, base[k])}
    assert changed and all(k.endswith("_proj.weight") and "language_model" in k for k in changed)


# -- the CLI and the world entry point --------------------------------------------------------------------------


def test_cli_stops_in_one_line_when_nothing_can_be_ranked(init, tmp_path, no_progress_bars):  # noqa: F811
    """geneval over the world detector: an untrained policy draws nothing it accepts, so every sample ties."""
    result = CliRunner().invoke(
        app,
        ["train", "dpo", str(init), "--out", str(tmp_path / "run"), "--reward", "geneval", "--prompts-per-round", "2"]
        + ["--candidates", "2", "--steps-per-round", "1", "--save-every", "1", "--max-think-tokens", "2"]
        + ["--device", "cpu", "--threads", "1"],
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "round 0: no pair" in lines[0], result.stderr


def test_world_dpo_with_the_geneval_ranking(tmp_path):
    """The shipped world policy, its samples ranked by GenEval's rules over the world detector."""
    config = TrainDPOConfig(
        init=SHIPPED_MODELS["sft"],
        out=tmp_path / "run",
        reward="geneval",
        prompts_per_round=4,
        candidates=4,
        steps_per_round=2,
        batch_size=2,
        save_every=2,
        seed=1,
        device="cpu",
        threads=1,
    )
    train_world_dpo(config, echo=quiet)
    logged = updates(tmp_path / "run")
    assert [r["step"] for r in logged] == [0, 1] and logged[0]["pairs"] >= 1
    assert abs(logged[0]["loss"] - math.log(2)) < 1e-5


def test_a_prompts_file_holds_back_its_last_records(init, tmp_path):  # noqa: F811
    file = tmp_path / "prompts.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in RECORDS[:6]))
    config = config_for(init, tmp_path / "run", prompts=file, held_out_every=5, held_out_prompts=2, reward="pi")
    records, _, held = world_run(config)
    assert records == RECORDS[:4] and list(held.records) == RECORDS[4:6] and held.every == 5
    assert sorted(held.measures) == ["exact", "reward"]  # a judged reward is checked against the exact evaluator
    with pytest.raises(ThinkdrawError, match="6 records, not more than --held-out-prompts 6"):
        world_run(config_for(init, tmp_path / "run", prompts=file, held_out_every=5, held_out_prompts=6))
    with pytest.raises(ThinkdrawError, match="no such file"):
        config_for(init, tmp_path / "run", prompts=tmp_path / "missing.jsonl")


def test_a_constant_reward_gives_no_pair(init, tmp_path):  # noqa: F811
    def constant(samples):
        return [Score(0.5, "flat") for _ in samples]

    with pytest.raises(dpo.RunError, match="round 0: no pair"):
        dpo.train_dpo(config_for(init, tmp_path / "run"), RECORDS, constant, echo=quiet)
