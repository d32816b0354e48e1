"""`thinkdraw generate --verifier` and `thinkdraw serve-judge` on tiny saved models, and their one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from PIL import Image
from test_cli import assert_one_line_error, invoke
from test_cli_model import FAST, model_dir, no_progress_bars  # noqa: F401 (fixtures)

from thinkdraw.judges.chat import ChatJudge
from thinkdraw.judges.http import HTTPChat
from thinkdraw.judges.vlm import new_llava_judge
from thinkdraw.world.splits import load_split

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("judge") / "judge"
    words = {w for r in load_split("val") for w in r["prompt"].split()}
    chat = new_llava_judge(sorted(words), hidden=32, layers=1, vision_hidden=16, vision_layers=1)
    answer_yes_or_no(chat)
    chat.save(folder)
    return folder


def answer_yes_or_no(chat) -> None:
    """Make an untrained judge's first answer token "yes" or "no": their output rows point opposite ways and
    outweigh every other row, so one of them leads and P(yes) still varies with the image and question."""
    head = chat.model.get_output_embeddings().weight
    yes, no = chat.tokenizer.convert_tokens_to_ids(["yes", "no"])
    assert yes != no and chat.tokenizer.unk_token_id not in (yes, no)
    with torch.no_grad():
        direction = head[yes].clone()
        head.mul_(0.01)
        head[yes], head[no] = 10 * direction, -10 * direction


def test_generate_with_a_verifier_marks_the_pick(model_dir, judge_dir, tmp_path):  # noqa: F811
    out = tmp_path / "grid.png"
    args = ["generate", "a photo of a red circle", "--model", model_dir, "--verifier", "parm", "-N", "4"]
    result = invoke(*args, "--judge", judge_dir, "--checks", "2", "-o", out, *FAST)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert sum("<- pick" in line for line in lines) == 1
    assert re.search(r"parm: \d+ of 256 image tokens drawn; pick \[\d\]", result.output)
    assert Image.open(out).size[0] > 4 * 256  # four cells of image + plan side by side


def test_generate_metadata_with_a_verifier_writes_its_choices(model_dir, judge_dir, tmp_path):  # noqa: F811
    meta = tmp_path / "meta.jsonl"
    meta.write_text("".join(json.dumps(r) + "\n" for r in load_split("val")[:2]))
    args = ["generate", "--metadata", meta, "--outdir", tmp_path / "out", "--model", model_dir, "--verifier", "bon"]
    result = invoke(*args, "-N", "3", "--images-per-prompt", "2", "--judge", judge_dir, *FAST)
    assert result.exit_code == 0, result.output
    about = json.loads((tmp_path / "out" / "00001" / "verifier.json").read_text())
    assert len(about) == 2 and all(len(a["scores"]) == 3 and a["image_tokens"] == 3 * 64 for a in about)
    assert all(max(a["scores"]) == a["scores"][a["chosen"]] for a in about)
    assert len(list((tmp_path / "out" / "00001" / "samples").glob("*.png"))) == 2


def test_verifier_option_errors(model_dir, judge_dir, tmp_path):  # noqa: F811
    base = ["generate", "a photo of a circle", "--model", model_dir, *FAST]
    assert_one_line_error(invoke(*base, "--verifier", "beam"), "--verifier 'beam'")
    assert_one_line_error(invoke(*base, "-N", "4"), "--candidates is not used without --verifier")
    assert_one_line_error(invoke(*base, "--verifier", "bon", "-n", "2"), "-n is not used with --verifier")
    assert_one_line_error(invoke(*base, "--verifier", "bon", "--judge", tmp_path / "none"), "no judge folder")
    down = invoke(*base, "--verifier", "bon", "-N", "2", "--judge", "http://127.0.0.1:9", "-o", tmp_path / "x.png")
    assert_one_line_error(down, "judge server http://127.0.0.1:9", "connection refused")
    assert not (tmp_path / "x.png").exists()


def test_serve_judge_answers_over_http(judge_dir, tmp_path):
    """The real command in a process: it prints its url, answers as the judge does locally, and stops."""
    server = subprocess.Popen(
        [sys.executable, "-m", "thinkdraw", "serve-judge", str(judge_dir), "--port", "0", "--threads", "1"],
        stderr=subprocess.PIPE,
        text=True,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    try:
        line = server.stderr.readline()
        url = re.search(r"at (http://[\d.:]+)/v1", line).group(1)
        from thinkdraw.judges.base import Query
        from thinkdraw.judges.vlm import VLMChat

        image = Image.new("RGB", (64, 64), (200, 30, 30))
        queries = [Query("a photo of a red circle", image), Query("a photo of two blue squares", image)]
        remote = ChatJudge(HTTPChat(url, timeout=60)).yes(queries)
        local = ChatJudge(VLMChat.load(str(judge_dir))).yes(queries)
        assert remote == pytest.approx(local, abs=1e-5)
    finally:
        server.terminate()
        server.wait(timeout=30)
    bad = subprocess.run(
        [sys.executable, "-m", "thinkdraw", "serve-judge", str(tmp_path / "nope"), "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "no judge folder" in bad.stderr


def test_the_rule_judge_verifies_from_the_cli_and_is_not_a_chat_judge(tmp_path):
    out = tmp_path / "grid.png"
    args = ["generate", "a photo of a red star", "--model", "sft", "--verifier", "bon", "-N", "2", "--judge"]
    result = invoke(*args, "world-rules", "-o", out, *FAST)
    assert result.exit_code == 0, result.output
    assert sum("<- pick" in line for line in result.output.splitlines()) == 1
    unknown = invoke(args[0], "a photo of a star above a star", *args[2:], "world-rules", "-o", out, *FAST)
    assert_one_line_error(unknown, "no GenEval record for the prompt")
    assert_one_line_error(invoke("serve-judge", "world-rules"), "answers by GenEval's rules, not by chat")
