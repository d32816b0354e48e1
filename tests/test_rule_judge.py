"""The rule judge (GenEval's rules over a detector, as a Judge) and the learned world detector's pieces."""

import random

import numpy as np
import pytest
import torch

from thinkdraw.judges.base import JudgeError, Query
from thinkdraw.judges.rules import RuleJudge
from thinkdraw.plan import to_grid
from thinkdraw.world.data import feedback_sentence
from thinkdraw.world.detector import WorldDetector
from thinkdraw.world.layout import random_layout
from thinkdraw.world.learned_detector import (
    STRIDE,
    DetectorNet,
    DetectorNetConfig,
    LearnedWorldDetector,
    decode,
    detection_loss,
    pixels_of,
    targets,
)
from thinkdraw.world.plans import plan_of_scene
from thinkdraw.world.render import WorldObject, render, render_image
from thinkdraw.world.spec import CANVAS

RECORD = {
    "tag": "position",
    "prompt": "a photo of a red circle above a blue square",
    "include": [
        {"class": "circle", "count": 1, "color": "red"},
        {"class": "square", "count": 1, "color": "blue", "position": ["below", 0]},
    ],
}
RIGHT = [WorldObject("circle", "red", 20, 4, 16), WorldObject("square", "blue", 20, 40, 16)]


def rule_judge():
    return RuleJudge(WorldDetector(), {RECORD["prompt"]: RECORD}.get, feedback_sentence)


def query(objects, progress=1.0, plan=None):
    return Query(RECORD["prompt"], render_image(objects), plan, progress)


def whole(q):
    return Query(q.prompt, q.image, q.plan)


def test_outcome_passes_the_right_scene_and_ranks_near_misses_above_far_ones():
    judge = rule_judge()
    wrong_colour = [RIGHT[0], WorldObject("square", "green", 20, 40, 16)]
    nothing = []
    assert judge.yes([query(RIGHT), query(wrong_colour), query(nothing)]) == [1.0, 0.25, 0.0]
    assert judge.score([query(RIGHT), query(wrong_colour)]) == [10.0, 5.0]
    assert judge.feedback([query(RIGHT), query(wrong_colour)]) == ["", "The square is not blue."]


def test_a_partial_image_is_judged_by_the_objects_drawn_whole():
    judge = rule_judge()
    # Only the top half is drawn: the red circle is whole, the square is not drawn yet (forgiven).
    top_right = query([RIGHT[0]], progress=0.5)
    top_wrong = query([WorldObject("circle", "green", 20, 4, 16)], 0.5)
    # a wrong object below the frontier is not looked at yet
    below = query([RIGHT[0], WorldObject("square", "green", 20, 40, 16)], progress=0.5)
    assert judge.yes([top_right, below], "potential") == [1.0, 1.0]
    assert judge.yes([top_right, below], "clarity") == [0.0, 0.0]
    two_red = [WorldObject("circle", "red", 2, 4, 16), WorldObject("square", "blue", 30, 4, 16)]  # side by side
    assert judge.yes([query(two_red, 0.5)], "potential") == [0.0]  # the square is not below the circle: lost
    assert judge.yes([query(two_red, 0.5)], "clarity") == [1.0]
    assert judge.yes([top_wrong], "process") == [0.0]  # the circle is drawn whole, and green
    assert judge.yes([whole(top_wrong), whole(top_right)], "outcome") == [
        0.0,
        0.25,
    ]  # progress 1: the rules on the whole image


def test_a_partial_image_whose_plan_breaks_the_rules_has_no_potential():
    """A thinking policy draws its plan, so a wrong plan stops a path at its first check, however right the part
    drawn so far; a right plan, a rationale or no plan leave the answer to the drawn part."""
    judge = rule_judge()
    flipped = [WorldObject("circle", "red", 20, 40, 16), WorldObject("square", "blue", 20, 4, 16)]
    wrong_plan, right_plan = plan_of_scene(flipped).text(), plan_of_scene(RIGHT).text()
    partial = [query([RIGHT[0]], 0.5, plan) for plan in (wrong_plan, right_plan, "one red circle", None)]
    assert judge.yes(partial, "potential") == [0.0, 1.0, 1.0, 1.0]
    assert judge.yes(partial, "clarity") == [1.0, 0.0, 0.0, 0.0]
    assert judge.yes([query(RIGHT, 1.0, wrong_plan)], "outcome") == [1.0]  # a finished image: what it shows


def test_ground_semantic_spatial_and_unknown_prompts():
    judge = rule_judge()
    q = query(RIGHT, plan=plan_of_scene(RIGHT).text())
    assert judge.ground([q, q], ["red circle", "green circle"]) == [to_grid((20, 4, 36, 20), CANVAS), None]
    assert judge.yes([q], "semantic") == [1.0] and judge.yes([q], "spatial") == [1.0]
    flipped = [WorldObject("circle", "red", 20, 40, 16), WorldObject("square", "blue", 20, 4, 16)]
    assert judge.yes([query(RIGHT, plan=plan_of_scene(flipped).text())], "spatial") == [0.0]
    with pytest.raises(JudgeError, match="no GenEval record"):
        judge.yes([Query("a photo of a dog", render_image(RIGHT))])
    with pytest.raises(JudgeError, match="plan cannot be read"):
        judge.yes([query(RIGHT, plan="red circle at the top")], "semantic")


def perfect_maps(labels, config):
    """The net's output that its targets describe exactly (logits far from 0 where the targets are 0 or 1)."""
    t = targets(labels, config)
    heat = torch.where(t["heat"] == 1, 10.0, -10.0)
    colors = torch.nn.functional.one_hot(t["color"], len(config.colors)).permute(0, 3, 1, 2).float() * 10
    regress = t["regress"].clone()
    regress[:, 3] = torch.logit(regress[:, 3].clamp(1e-4, 1 - 1e-4))
    return torch.cat([heat, colors, regress], dim=1)


def test_targets_decode_back_to_the_exact_detections():
    rng = random.Random(3)
    images = [render(random_layout(rng, rng.randint(1, 6))) for _ in range(16)]
    labels = [WorldDetector().detect(image) for image in images]
    config = DetectorNetConfig(width=8)
    found = decode(perfect_maps(labels, config), config)
    key = lambda dets: sorted((d.label, d.color, d.box, round(d.score, 3)) for d in dets)  # noqa: E731
    assert [key(f) for f in found] == [key(lab) for lab in labels]
    assert sum(map(len, labels)) > 30 and CANVAS % STRIDE == 0


def test_a_tiny_detector_learns_and_round_trips(tmp_path):
    torch.manual_seed(0)
    rng = random.Random(0)
    images = np.stack([render(random_layout(rng, 2)) for _ in range(8)])
    labels = [WorldDetector().detect(image) for image in images]
    net = DetectorNet(DetectorNetConfig(width=16, dilations=(1, 2, 4, 2, 1)))
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    target = targets(labels, net.config)
    first = None
    for _ in range(60):
        loss, _ = detection_loss(net(pixels_of(images)), target, net.config)
        first = first or loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first / 3
    net.save_pretrained(tmp_path / "det")
    loaded = LearnedWorldDetector.load(tmp_path / "det")
    assert torch.equal(loaded.net(pixels_of(images[:2])), net.eval()(pixels_of(images[:2])))
    assert loaded.detect(images[0]) == loaded.detect_many([images[0], images[1]])[0]


def test_train_detector_resumes_exports_and_rejects_bad_options(tmp_path):
    from test_cli import assert_one_line_error, invoke

    from thinkdraw.checkpoint import read_meta

    out = tmp_path / "det"
    args = ["train", "detector", "--scenes", "6", "--batch-size", "4", "--width", "8", "--out", out, "--threads", "1"]
    assert invoke(*args, "--steps", "2", "--save-every", "2").exit_code == 0
    images = np.load(out / "data.npz")["images"]
    assert images.shape == (18, CANVAS, CANVAS, 3)  # each scene finished, partial and token-mixed
    result = invoke(*args, "--steps", "3", "--save-every", "2", "--resume")
    assert result.exit_code == 0, result.output
    assert read_meta(out / "checkpoint")["step"] == 3
    assert invoke("train", "export", out / "checkpoint", tmp_path / "shipped").exit_code == 0
    shipped = LearnedWorldDetector.load(tmp_path / "shipped")
    assert not (tmp_path / "shipped" / "trainer.safetensors").exists() and shipped.net.dtype == torch.float32
    assert_one_line_error(invoke("train", "detector", "--scenes", "0"), "nothing to learn from")
    assert_one_line_error(invoke("train", "detector", "--width", "12"), "--width a multiple of 8")
