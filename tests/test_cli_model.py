"""`thinkdraw generate` on a tiny saved policy, its one-line errors, and a bad `train policy` stage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import assert_one_line_error, invoke
from tiny_models import tiny_policy, tiny_vq
from transformers.utils import logging as hf_logging

from thinkdraw.checkpoint import save_checkpoint
from thinkdraw.world.splits import load_split

torch.set_num_threads(1)

FAST = ("--cfg-scale", "2", "--threads", "1")


@pytest.fixture(scope="module", autouse=True)
def no_progress_bars():
    """What `thinkdraw` (main) does through HF_HUB_DISABLE_PROGRESS_BARS; the test runner calls the app directly."""
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    yield
    if was:
        hf_logging.enable_progress_bar()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny world policy saved as the trainers save one (its thinkdraw.json names the world)."""
    folder = tmp_path_factory.mktemp("policy") / "model"
    policy = tiny_policy()
    save_checkpoint(
        folder, policy.model, {"kind": "policy-sft", "step": 0, "environment": "world"}, None, policy.tokenizer
    )
    return folder


@pytest.fixture
def corrupt_dir(model_dir, tmp_path) -> Path:
    folder = tmp_path / "corrupt"
    folder.mkdir()
    for path in model_dir.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "model.safetensors").write_bytes(b"garbage, not safetensors" * 8)
    return folder


def test_missing_checkpoint_folder(tmp_path):
    line = assert_one_line_error(invoke("generate", "a photo of a circle", "--model", tmp_path / "nope", *FAST))
    assert str(tmp_path / "nope") in line and "no checkpoint here" in line


def test_corrupt_checkpoint(corrupt_dir):
    assert_one_line_error(
        invoke("generate", "a photo of a circle", "--model", corrupt_dir, *FAST), str(corrupt_dir), "cannot load"
    )


def test_corrupt_checkpoint_process(corrupt_dir, tmp_path):
    """The real entry point: exit code 2, exactly one line on stderr (no log or progress noise), no output file."""
    done = subprocess.run(
        [sys.executable, "-m", "thinkdraw", "generate", "a photo of a circle", "--model", str(corrupt_dir)]
        + ["-o", str(tmp_path / "x.png"), *FAST],
        capture_output=True,
        text=True,
        timeout=120,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith(f"error: {corrupt_dir}: cannot load checkpoint (")
    assert done.stderr.count("\n") == 1 and done.stderr.endswith("\n"), done.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("prompt", "fragment"),
    [
        ("", "error: the prompt is empty"),
        ("   ", "error: the prompt is empty"),
        ("a photo of a dog", "does not know 'dog'"),
        ("a photo of two unicorns", "does not know 'unicorns' ("),
    ],
)
def test_bad_prompts(model_dir, tmp_path, prompt, fragment):
    out = tmp_path / "out.png"
    assert_one_line_error(invoke("generate", prompt, "--model", model_dir, "-o", out, *FAST), fragment)
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--cfg-scale", "0.5"], "cfg_scale is 0.5: it must be >= 1"),
        (["--text-temperature", "-1"], "text_temperature is -1.0"),
        (["--text-top-k", "-2"], "text_top_k is -2"),
        (["-n", "0"], "must be at least 1"),
        (["--metadata", "m.jsonl"], "give either a prompt or --metadata"),
        # an option the mode ignores is an error, not silence
        (["--no-think", "--text-temperature", "0.5"], "--text-temperature is not used with --no-think"),
        (["--no-think", "--max-think-tokens", "9"], "--max-think-tokens is not used with --no-think"),
        (["--no-think", "--plan", "circle (0,0),(99,99)"], "--plan is not used with --no-think"),
        (["--plan", "circle (0,0),(99,99)", "--text-top-k", "3"], "--text-top-k is not used when the plan is given"),
        (["--images-per-prompt", "2"], "--images-per-prompt is not used with a single prompt"),
        (["--given-plans"], "--given-plans is not used with a single prompt"),
        (["--device", "tpu"], "--device 'tpu'"),
        (["--dtype", "int8"], "--dtype 'int8'"),
        # a given plan: malformed, or not in world words
        (["--plan", "circle (0,0)"], "plan entry 1 is not 'phrase (x1,y1),(x2,y2)'"),
        (["--plan", "circle (0,0),(2000,10)"], "is not a box on the 0-1000 grid"),
        (["--plan", "green hexagon (0,0),(99,99)"], "'green hexagon' is not '[colour] shape'"),
        (["--plan", "   "], "--plan is empty"),
    ],
)
def test_bad_options(model_dir, args, fragment):
    assert_one_line_error(invoke("generate", "a photo of a circle", "--model", model_dir, *args), fragment)


def test_greedy_plans_do_not_depend_on_the_seed(model_dir):
    """--text-temperature reaches the sampler: at 0 the plan is the same for every seed (the images differ)."""
    plans = []
    for seed in ("1", "2"):
        args = ("--text-temperature", "0", "--seed", seed, "-n", "1", "-o", Path(model_dir) / f"{seed}.png")
        result = invoke("generate", "a photo of a red circle", "--model", model_dir, *args, *FAST)
        assert result.exit_code == 0, result.output
        plans.append(result.stdout.splitlines()[0])
    assert plans[0] == plans[1]


def test_generate_writes_the_picture(model_dir, tmp_path):
    out = tmp_path / "deep" / "out.png"
    result = invoke("generate", "a photo of a red circle", "--model", model_dir, "-n", "2", "-o", out, *FAST)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("[0] plan: ") and lines[1].startswith("[1] plan: ")
    assert lines[-1] == f"wrote {out}"
    with Image.open(out) as image:
        image.load()
        assert (image.format, image.mode) == ("PNG", "RGB")
        assert image.width >= 2 * 256 and image.height >= 256  # two cells of at least the 256 px image
        first = image.copy()
    again = tmp_path / "again.png"
    result = invoke("generate", "a photo of a red circle", "--model", model_dir, "-n", "2", "-o", again, *FAST)
    assert result.exit_code == 0, result.output
    with Image.open(again) as image:
        assert np.array_equal(np.asarray(image), np.asarray(first))  # same seed, same picture
    no_think = tmp_path / "plain.png"
    result = invoke(
        "generate", "a photo of a red circle", "--model", model_dir, "-n", "1", "--no-think", "-o", no_think, *FAST
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "[0] (no plan)"


def test_metadata_writes_geneval_layout_and_skips_done_prompts(model_dir, tmp_path):
    records = load_split("test")[::100]  # 5 prompts
    metadata = tmp_path / "metadata.jsonl"
    metadata.write_text("".join(json.dumps(r) + "\n" for r in records))
    outdir = tmp_path / "gen"
    args = ["generate", "--metadata", metadata, "--outdir", outdir, "--model", model_dir, "--images-per-prompt", "2"]
    args += ["--batch-size", "4", *FAST]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == f"wrote 5 prompts x 2 images to {outdir}"
    assert sorted(p.name for p in outdir.iterdir()) == [f"{i:05d}" for i in range(5)]
    for i, record in enumerate(records):
        folder = outdir / f"{i:05d}"
        assert json.loads((folder / "metadata.jsonl").read_text()) == record
        assert sorted(p.name for p in (folder / "samples").iterdir()) == ["0000.png", "0001.png"]
        with Image.open(folder / "samples" / "0000.png") as image:
            assert (image.size, image.mode) == ((64, 64), "RGB")
        plans = json.loads((folder / "plans.json").read_text())
        assert len(plans) == 2 and all(isinstance(p, str) for p in plans)

    # a rerun leaves complete prompt folders alone and redoes incomplete ones, with the same images
    first_run = np.asarray(Image.open(outdir / "00003" / "samples" / "0001.png"))
    sentinel = Image.new("RGB", (64, 64), (1, 2, 3))
    for i in (1, 3):
        sentinel.save(outdir / f"{i:05d}" / "samples" / "0000.png")
    (outdir / "00003" / "plans.json").unlink()
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    with Image.open(outdir / "00001" / "samples" / "0000.png") as image:
        assert np.asarray(image).reshape(-1, 3).tolist()[0] == [1, 2, 3]  # skipped
    with Image.open(outdir / "00003" / "samples" / "0000.png") as image:
        assert not (np.asarray(image) == np.array([1, 2, 3], dtype=np.uint8)).all()  # regenerated
    assert (outdir / "00003" / "plans.json").is_file()
    assert np.array_equal(np.asarray(Image.open(outdir / "00003" / "samples" / "0001.png")), first_run)

    # and the folder is what the evaluator reads
    result = invoke("eval", "geneval", outdir)
    assert result.exit_code == 0, result.output
    assert len((outdir / "results.jsonl").read_text().splitlines()) == 10


def test_train_policy_rejects_an_unknown_stage(tmp_path):
    assert_one_line_error(invoke("train", "policy", "bogus", tmp_path), "unknown stage 'bogus'; choose base or sft")
    assert_one_line_error(invoke("train", "policy", "base", tmp_path / "nope"), "no such checkpoint folder")


def test_train_policy_sft_from_a_vq_checkpoint_is_an_error(tmp_path):
    """A VQ checkpoint given where a policy is expected: one line, not a 7B default Janus built in memory."""
    save_checkpoint(tmp_path / "vq", tiny_vq(), {"kind": "vq", "step": 0})
    assert_one_line_error(
        invoke("train", "policy", "sft", tmp_path / "vq", "--out", tmp_path / "run", "--steps", "1", "--threads", "1"),
        "holds a 'janus_vqgan' model, not the 'janus' model asked for",
    )
    assert_one_line_error(invoke("generate", "a photo of a circle", "--model", tmp_path / "vq", *FAST), "'janus_vqgan'")


def test_export_writes_a_smaller_loadable_copy(tmp_path):
    """`train export`: fp16 weights equal to the originals cast down, but the patch-local VQ's encoder side
    (encoder, quant_conv, codebook) kept exact in float32; tokenizer kept, no optimizer or run state."""
    from thinkdraw.checkpoint import META, read_meta
    from thinkdraw.policy.model import Policy

    policy = tiny_policy()
    optimizer = torch.optim.AdamW(policy.model.parameters())
    source = tmp_path / "run"
    resume = {"grpo": {"next_batch": 3, "batch": {"prompts": ["a photo of a circle"] * 8}}}
    save_checkpoint(source, policy.model, {"kind": "policy-sft", "step": 7, **resume}, optimizer, policy.tokenizer)
    result = invoke("train", "export", source, tmp_path / "ship")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote {tmp_path / 'ship'} (float16, ")
    names = {p.name for p in (tmp_path / "ship").iterdir()}
    assert {"model.safetensors", "tokenizer.json", META} <= names and "trainer.safetensors" not in names
    meta = read_meta(tmp_path / "ship")
    assert (meta["kind"], meta["step"], meta["exported_dtype"]) == ("policy-sft", 7, "float16")
    assert "optimizer" not in meta and "grpo" not in meta  # what resuming needs is not shipped
    shipped = Policy.load(tmp_path / "ship")
    originals = policy.model.state_dict()
    exact = ("model.vqmodel.encoder.", "model.vqmodel.quant_conv.", "model.vqmodel.quantize.")
    for name, value in shipped.model.state_dict().items():
        assert value.dtype == torch.float32  # loading casts back
        expected = originals[name] if name.startswith(exact) else originals[name].half().float()
        assert torch.equal(value, expected), name
    assert not torch.equal(
        originals["model.vqmodel.encoder.conv_in.weight"].half().float(),
        originals["model.vqmodel.encoder.conv_in.weight"],
    )  # so keeping it exact is something to check
    assert (tmp_path / "ship" / "model.safetensors").stat().st_size < (source / "model.safetensors").stat().st_size


def test_export_rejects_bad_input(tmp_path):
    assert_one_line_error(invoke("train", "export", tmp_path, tmp_path / "x"), "not a thinkdraw checkpoint")
    (tmp_path / "thinkdraw.json").write_text("{}")
    assert_one_line_error(invoke("train", "export", tmp_path, tmp_path / "x", "--dtype", "int8"), "choose float16")
