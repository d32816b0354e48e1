"""The shipped world model (thinkdraw/assets): small, loadable, consistent, and the README's main job runs on it."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from PIL import Image
from transformers import JanusForConditionalGeneration, JanusVQVAE

from thinkdraw.checkpoint import load_model, read_meta
from thinkdraw.world.registry import ASSETS
from thinkdraw.world.train_vq import roundtrip_accuracy

torch.set_num_threads(1)


def test_six_checkpoints_within_40_mb():
    names = ["base", "detector", "grpo", "judge", "sft", "vq"]
    assert sorted(p.name for p in ASSETS.iterdir() if p.is_dir()) == names
    size = sum(f.stat().st_size for f in ASSETS.rglob("*") if f.is_file())
    assert size <= 40 * 10**6, f"{size / 10**6:.1f} MB"  # the budget for shipped assets
    kinds = [read_meta(ASSETS / p)["kind"] for p in ("vq", "base", "sft", "grpo", "judge", "detector")]
    assert kinds == ["vq", "policy-base", "policy-sft", "policy-grpo", "judge", "detector"]
    assert not any(ASSETS.rglob("trainer.safetensors"))  # no optimizer state shipped


def test_policies_carry_the_shipped_vq_unchanged():
    vq = load_model(JanusVQVAE, ASSETS / "vq", dtype=torch.float32).state_dict()
    for part in ("base", "sft", "grpo"):
        inner = load_model(JanusForConditionalGeneration, ASSETS / part, dtype=torch.float32).model.vqmodel.state_dict()
        assert inner.keys() == vq.keys()
        assert all(torch.equal(inner[k], vq[k]) for k in vq), part  # the VQ is frozen while the policy trains


def test_shipped_vq_round_trip_is_read_right():
    """The issue's figure (>= 99% of objects read right, box within 1 px) on 40 scenes other than the 500 of
    the training run's own check."""
    vq = load_model(JanusVQVAE, ASSETS / "vq", dtype=torch.float32).eval()  # as Policy.load loads it
    assert vq.encoder.conv_in.weight.dtype == torch.float32
    result = roundtrip_accuracy(vq, scenes=40, seed=7)
    assert result["objects_right"] >= 0.99, result


def test_main_job_runs_offline(tmp_path):
    out = tmp_path / "out.png"
    prompt = "a photo of two red circles left of a blue square"
    cmd = [sys.executable, "-m", "thinkdraw", "generate", prompt, "--think", "-n", "2", "-o", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["[0] plan", "[1] plan"]
    assert lines[-1] == f"wrote {out}"
    with Image.open(out) as grid:
        assert grid.width >= 2 * 256 and grid.height >= 256


def test_the_world_judge_tells_right_scenes_from_spoilt_ones():
    """The shipped judge on 40 val prompts' scenes (half with one mistake) through the shipped VQ, each outcome
    label from the exact detector: the judge, which never sees the detector, agrees well above chance (the
    shipped judge's measured accuracy is in the README; this guards against a broken or swapped judge)."""
    import random

    from thinkdraw.judges.chat import ChatJudge
    from thinkdraw.judges.vlm import VLMChat
    from thinkdraw.policy.model import Policy
    from thinkdraw.world.judge_data import judge_examples, rendered_scenes
    from thinkdraw.world.registry import SHIPPED_JUDGES, SHIPPED_MODELS
    from thinkdraw.world.splits import load_split

    rng = random.Random(11)
    policy = Policy.load(SHIPPED_MODELS["sft"])
    scenes = rendered_scenes(policy, rng.sample(load_split("val"), 40), rng, spoil=0.5)
    outcome = [e for e in judge_examples(policy, scenes, rng) if e.ask == "outcome"]
    said = ChatJudge(VLMChat.load(str(SHIPPED_JUDGES["world"]))).yes([e.query for e in outcome], "outcome")
    agree = [(p >= 0.5) == (e.answer == "yes") for p, e in zip(said, outcome, strict=True)]
    share_yes = sum(e.answer == "yes" for e in outcome) / len(outcome)
    assert 0.2 <= share_yes <= 0.8  # both kinds are there
    assert sum(agree) / len(agree) >= max(share_yes, 1 - share_yes) + 0.1  # 30 of 40 (0.75) when written


def test_the_shipped_detector_reads_scenes_as_the_exact_detector_does():
    import random

    from thinkdraw.policy.vq import decode_tokens, encode_images
    from thinkdraw.world.detector import WorldDetector
    from thinkdraw.world.layout import random_layout
    from thinkdraw.world.learned_detector import LearnedWorldDetector
    from thinkdraw.world.render import render_image

    vq = load_model(JanusVQVAE, ASSETS / "vq", dtype=torch.float32)
    rng = random.Random(7)
    scenes = [render_image(random_layout(rng, rng.randint(1, 6))) for _ in range(40)]
    images = decode_tokens(vq, encode_images(vq, scenes))
    learned, exact = LearnedWorldDetector.load(ASSETS / "detector"), WorldDetector()
    key = lambda found: sorted((d.label, d.color, d.box) for d in found if d.score > 0.3)  # noqa: E731
    for image in images:
        mine, truth = key(learned.detect(image)), key(exact.detect(image))
        assert [m[:2] for m in mine] == [t[:2] for t in truth]  # every object's shape and colour
        gaps = [abs(a - b) for m, t in zip(mine, truth, strict=True) for a, b in zip(m[2], t[2], strict=True)]
        assert max(gaps, default=0) <= 1  # and its box, within a pixel


def test_the_shipped_sft_draws_ground_truth_plans_at_its_own_settings():
    """The SFT's checkpoint asks for greedy image tokens after a plan and no guidance, and so given the ground-truth
    plans of 24 val prompts (three per task) it draws images that pass GenEval's rules (0.93 on the test split)."""
    import random

    from thinkdraw.evaluator.rules import judge_image
    from thinkdraw.policy.model import Policy
    from thinkdraw.world.detector import WorldDetector
    from thinkdraw.world.layout import solve_layout
    from thinkdraw.world.plans import plan_of_scene
    from thinkdraw.world.splits import load_split

    policy = Policy.load(ASSETS / "sft")
    settings = policy.resolve(None, after_plan=True)
    assert (settings.temperature, settings.cfg_scale) == (0.0, 1.0)
    records = {}
    for i, record in enumerate(load_split("val")):
        if len(records.setdefault(record["tag"], [])) < 3:
            records[record["tag"]].append((i, record))
    chosen = [pair for pairs in records.values() for pair in pairs]
    plans = [plan_of_scene(solve_layout(r, random.Random(i))).text() for i, r in chosen]
    drawn = policy.draw([r["prompt"] for _, r in chosen], plans)
    detector = WorldDetector()
    passed = [judge_image(r, im, detector).correct for (_, r), im in zip(chosen, policy.decode(drawn), strict=True)]
    assert sum(passed) >= 20, passed
