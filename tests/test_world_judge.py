"""The world judges' data and training: rollouts stored and read back, detector labels, a tiny judge learning."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch
from tiny_models import tiny_policy

from thinkdraw.configs import TrainJudgeConfig
from thinkdraw.engine.settings import SamplingSettings
from thinkdraw.errors import ThinkdrawError
from thinkdraw.evaluator.rules import judge
from thinkdraw.judges.base import parse_box
from thinkdraw.judges.rules import clause_share
from thinkdraw.plan import to_grid
from thinkdraw.world.data import with_error
from thinkdraw.world.judge_data import (
    Drawn,
    described,
    draw_rollouts,
    feedback_sentence,
    grounded_box,
    judge_examples,
    read_rollouts,
    rendered_scenes,
    train_world_judge,
)
from thinkdraw.world.layout import as_detections, solve_layout
from thinkdraw.world.splits import load_split

torch.set_num_threads(1)
TWO = {
    "tag": "counting",
    "include": [{"class": "circle", "count": 2, "color": "red"}],
    "exclude": [{"class": "circle", "count": 3}],
    "prompt": "a photo of two red circles",
}


@pytest.fixture(scope="module")
def policy():
    return tiny_policy()


def test_rollouts_are_stored_in_parts_resume_and_read_back(policy, tmp_path):
    lines = []
    draw_rollouts(policy, "val", 3, tmp_path, per_prompt=2, seed=0, batch=4, echo=lines.append)
    assert sorted(p.name for p in tmp_path.glob("part-*")) == [
        "part-00000.json",
        "part-00000.npy",
        "part-00002.json",
        "part-00002.npy",
    ]
    drawn = read_rollouts(tmp_path)
    records = load_split("val")
    assert [d.record for d in drawn] == [records[i] for i in (0, 0, 1, 1, 2, 2)]
    direct = policy.generate([r["prompt"] for r in records[:2]], n=2, seed=0)
    assert all(torch.equal(d.tokens, c.image_tokens) for d, c in zip(drawn, direct, strict=False))
    assert drawn[0].plan == direct[0].plan
    (tmp_path / "part-00002.npy").unlink()  # an interrupted part is drawn again, the rest kept
    lines.clear()
    draw_rollouts(policy, "val", 3, tmp_path, per_prompt=2, seed=0, batch=4, echo=lines.append)
    assert lines == ["rollouts: 3/3 prompts"]
    assert all(torch.equal(a.tokens, b.tokens) for a, b in zip(read_rollouts(tmp_path), drawn, strict=True))
    with pytest.raises(ThinkdrawError, match="rollouts of other settings"):
        draw_rollouts(policy, "val", 3, tmp_path, per_prompt=3, seed=0, batch=4)
    with pytest.raises(ThinkdrawError, match="rollouts of other settings"):  # drawn otherwise: never mixed in
        draw_rollouts(
            policy, "val", 3, tmp_path, per_prompt=2, seed=0, batch=4, sampling=SamplingSettings(temperature=0)
        )
    with pytest.raises(ThinkdrawError, match="no rollouts here"):
        read_rollouts(tmp_path / "nothing")


def test_feedback_and_scores_come_from_the_failures():
    rng = random.Random(0)
    right = solve_layout(TWO, rng)
    verdict = judge(TWO, as_detections(right))
    assert feedback_sentence(TWO, verdict) == "nothing" and clause_share(TWO, verdict) == 1.0
    one = judge(TWO, as_detections(right[:1]))
    assert feedback_sentence(TWO, one) == "There is one circle, not two." and clause_share(TWO, one) == 0.0
    blue = [replace(o, color="blue") for o in right]
    assert feedback_sentence(TWO, judge(TWO, as_detections(blue))) == "The circles are not red."
    three = as_detections(right) + [as_detections(right)[0]]
    assert feedback_sentence(TWO, judge(TWO, three)) == "There are too many circles."


def test_grounding_finds_the_named_object_nearest_the_plan():
    rng = random.Random(1)
    objects = solve_layout(TWO, rng)
    detections = as_detections(objects)
    boxes = [to_grid(o.box, 64) for o in objects]
    assert grounded_box("red circle", boxes[1], detections) == boxes[1]
    assert grounded_box("circle", boxes[0], detections) == boxes[0]
    assert grounded_box("blue circle", boxes[0], detections) is None


def test_judge_examples_label_right_and_spoilt_scenes(policy):
    # the tiny VQ does not keep scenes readable, so images are built from rendered scenes' tokens by a VQ stand-in:
    # decode returns the rendered scene itself (the labels are what is being tested, not the VQ)
    rng = random.Random(2)
    right = solve_layout(TWO, rng)
    wrong = with_error(right, "color", rng)
    from thinkdraw.world.render import render_image

    scenes = {0: render_image(right), 1: render_image(wrong)}

    class Painter:
        num_image_tokens = policy.num_image_tokens

        def decode(self, tokens):
            return [scenes[int(t[0])] for t in tokens]

        def decode_partial(self, tokens, k):
            return [render_image([])] * len(tokens)  # nothing drawn yet

    from thinkdraw.world.plans import plan_of_scene

    drawn = [Drawn(TWO, plan_of_scene(o).text(), torch.full((64,), i)) for i, o in enumerate([right, wrong])]
    examples = judge_examples(Painter(), drawn, random.Random(0))
    by = {}
    for e in examples:
        by.setdefault(e.ask, []).append(e.answer)
    assert by["outcome"] == ["yes", "no"] and by["reflect"] == ["yes", "no"]
    assert by["potential"] == ["yes", "no"] and by["process"] == ["yes", "no"]
    # an empty partial image fails the rules: clear for the spoilt scene (same verdict), not for the right one
    assert by["clarity"] == ["no", "yes"]
    assert by["feedback"] == ["nothing", "The circles are not red."]
    assert by["score"] == ["10", "0"]
    assert by["semantic"] == ["yes", "no"]  # the plans are the scenes' own
    assert "spatial" not in by  # no relation to check
    # what is seen: every object of each scene, top to bottom, in the plan format
    for answer, objects in zip(by["describe"], [right, wrong], strict=True):
        ordered = sorted(objects, key=lambda o: (o.box[1], o.box[0]))
        assert answer == plan_of_scene(ordered).text()
    assert described([]) == "none"
    without = judge_examples(Painter(), drawn, random.Random(0), describe=False)
    assert [e for e in examples if e.ask != "describe"] == without  # the rest is unchanged
    for answer, objects in zip(by["ground"], [right, wrong], strict=True):
        assert parse_box(answer) in {to_grid(o.box, 64) for o in objects}
    assert {e.turn.image is None for e in examples if e.ask == "semantic"} == {True}
    ground = next(e for e in examples if e.ask == "ground")
    assert f'"{ground.phrase}"' in ground.turn.text and ground.turn.image is scenes[0]


def test_rendered_scenes_go_through_the_vq(policy):
    rng = random.Random(3)
    drawn = rendered_scenes(policy, load_split("val")[:4], rng, spoil=0.5)
    assert len(drawn) == 4 and all(d.tokens.shape == (policy.num_image_tokens,) for d in drawn)
    assert all(d.plan for d in drawn)


def test_a_tiny_world_judge_trains_saves_and_resumes(policy, tmp_path, monkeypatch):
    import thinkdraw.world.registry as registry

    policy.save(tmp_path / "policy")
    monkeypatch.setitem(registry.SHIPPED_MODELS, "tiny", tmp_path / "policy")
    draw_rollouts(policy, "val", 4, tmp_path / "rollouts", per_prompt=2, seed=0, batch=8)
    config = TrainJudgeConfig(
        rollouts=[tmp_path / "rollouts"],
        scenes=8,
        model="tiny",
        out=tmp_path / "judge",
        steps=12,
        batch_size=8,
        warmup=2,
        hidden=32,
        layers=1,
        vision_hidden=16,
        vision_layers=1,
        save_every=6,
        threads=1,
        device="cpu",
    )
    lines = []
    chat = train_world_judge(config, echo=lines.append)
    assert lines[0] == "labelling 16 images"
    import json

    log = [json.loads(line) for line in (tmp_path / "judge" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 11 and log[-1]["answer_ce"] < log[0]["answer_ce"]
    resumed = train_world_judge(replace(config, steps=14, resume=True), echo=lines.append)
    assert json.loads((tmp_path / "judge" / "checkpoint" / "thinkdraw.json").read_text())["step"] == 14
    assert resumed is not chat
    # the copy to ship: fp16, no optimizer state, answering as the trained judge does
    from test_cli import invoke

    from thinkdraw.judges.base import Query
    from thinkdraw.judges.chat import ChatJudge
    from thinkdraw.judges.vlm import VLMChat

    result = invoke("train", "export", tmp_path / "judge" / "checkpoint", tmp_path / "shipped")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "shipped" / "trainer.safetensors").exists()
    shipped = VLMChat.load(str(tmp_path / "shipped"))
    assert next(shipped.model.parameters()).dtype == torch.float32  # fp16 on disk, float32 when loaded
    queries = [
        Query(d.record["prompt"], policy.decode(d.tokens[None])[0]) for d in read_rollouts(tmp_path / "rollouts")
    ]
    assert ChatJudge(shipped).yes(queries) == pytest.approx(ChatJudge(resumed).yes(queries), abs=2e-2)


def test_a_judge_can_learn_only_some_questions(policy, tmp_path):
    from thinkdraw.world.judge_data import labelled_examples

    config = TrainJudgeConfig(scenes=6, out=tmp_path / "judge", asks=["outcome", "clarity"], describe=False)
    examples = labelled_examples(config, policy, echo=lambda line: None)
    assert [e.ask for e in examples] == ["outcome", "clarity"] * 6
    every = labelled_examples(replace(config, asks=[]), policy, echo=lambda line: None)
    assert [e for e in every if e.ask in ("outcome", "clarity")] == examples  # the same labels, the rest left out
    with pytest.raises(ThinkdrawError, match="--asks: no question nope"):
        TrainJudgeConfig(scenes=6, asks=["outcome", "nope"])
