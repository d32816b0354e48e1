"""Checkpoints: exact round trips, atomic saves, one-line errors for missing, corrupt or mismatched files."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import tiny_vq
from transformers import JanusForConditionalGeneration, JanusVQVAE

from thinkdraw.checkpoint import (
    META,
    TRAINER,
    CheckpointError,
    load_model,
    load_trainer_state,
    read_meta,
    save_checkpoint,
)
from thinkdraw.errors import ThinkdrawError
from thinkdraw.policy.vq import encode_pixels, latents

torch.set_num_threads(1)


def assert_one_line(err: pytest.ExceptionInfo, *fragments: str) -> None:
    assert isinstance(err.value, ThinkdrawError)
    message = str(err.value)
    assert message and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key


def vq_step(vq: JanusVQVAE, optimizer: torch.optim.Optimizer, seed: int) -> None:
    """One Adam step on a loss that reaches every VQ parameter: decoding (the codebook too) and encoding."""
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    loss = (vq.decode(encode_pixels(vq, pixels)) - pixels).square().mean() + latents(vq, pixels).square().mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


@pytest.fixture
def saved(tmp_path):
    """A VQ checkpoint at tmp_path/ckpt and the model it holds."""
    vq = tiny_vq(seed=1)
    save_checkpoint(tmp_path / "ckpt", vq, {"kind": "vq", "step": 7})
    return tmp_path / "ckpt", vq


def test_save_then_load_is_exact(saved, tmp_path):
    directory, vq = saved
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors", META]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no .tmp or .old left behind
    loaded = load_model(JanusVQVAE, directory)
    assert_same_weights(loaded, vq)
    assert loaded.config.num_embeddings == vq.config.num_embeddings == 64
    assert read_meta(directory) == {"kind": "vq", "step": 7}


def test_save_replaces_an_existing_checkpoint(saved, tmp_path):
    directory, _ = saved
    other = tiny_vq(seed=2)
    save_checkpoint(directory, other, {"kind": "vq", "step": 8})
    assert_same_weights(load_model(JanusVQVAE, directory), other)
    assert read_meta(directory)["step"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


class FailingTokenizer:
    """Fails after the model was written: the save dies half way."""

    def save_pretrained(self, path):
        raise OSError("disk full")


def test_failed_save_leaves_the_old_checkpoint(saved):
    directory, vq = saved
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(directory, tiny_vq(seed=3), {"kind": "vq", "step": 99}, tokenizer=FailingTokenizer())
    assert_same_weights(load_model(JanusVQVAE, directory), vq)
    assert read_meta(directory)["step"] == 7
    # the next save clears the half-written folder and succeeds
    newer = tiny_vq(seed=4)
    save_checkpoint(directory, newer, {"kind": "vq", "step": 100})
    assert_same_weights(load_model(JanusVQVAE, directory), newer)
    assert not directory.with_name("ckpt.tmp").exists()


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError) as err:
        load_model(JanusVQVAE, tmp_path / "nope")
    assert_one_line(err, str(tmp_path / "nope"), "no such folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError) as err:
        load_model(JanusVQVAE, tmp_path / "empty")
    assert_one_line(err, str(tmp_path / "empty"), "config.json missing")
    with pytest.raises(CheckpointError) as err:
        read_meta(tmp_path / "nope")
    assert_one_line(err, "not a thinkdraw checkpoint")


def test_missing_weights(saved):
    directory, _ = saved
    (directory / "model.safetensors").unlink()
    with pytest.raises(CheckpointError) as err:
        load_model(JanusVQVAE, directory)
    assert_one_line(err, str(directory), "cannot load checkpoint")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "header"])
def test_corrupt_weights(saved, damage):
    directory, _ = saved
    path = directory / "model.safetensors"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a safetensors file" * 10)
    else:  # a valid length prefix, then a broken JSON header
        path.write_bytes(data[:8] + b"{" * 32 + data[40:])
    with pytest.raises(CheckpointError) as err:
        load_model(JanusVQVAE, directory)
    assert_one_line(err, str(directory), "cannot load checkpoint")


def test_corrupt_config_and_meta(saved):
    directory, _ = saved
    (directory / META).write_text('{"kind": ')
    with pytest.raises(CheckpointError) as err:
        read_meta(directory)
    assert_one_line(err, META, "corrupt")
    (directory / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError) as err:
        load_model(JanusVQVAE, directory)
    assert_one_line(err, str(directory), "config.json")


def test_wrong_model_class(saved):
    """A VQ checkpoint asked for as a policy: an error, not a default-sized (7B) Janus built from the wrong config."""
    directory, _ = saved
    with pytest.raises(CheckpointError) as err:
        load_model(JanusForConditionalGeneration, directory)
    assert_one_line(err, "'janus_vqgan'", "'janus'")


def test_mismatched_shapes(saved):
    directory, _ = saved
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "num_embeddings": 32}))
    with pytest.raises(CheckpointError) as err:
        load_model(JanusVQVAE, directory)
    assert_one_line(err, str(directory))


def test_trainer_state_round_trips(tmp_path):
    torch.manual_seed(0)
    vq = tiny_vq(seed=5).train()
    optimizer = torch.optim.Adam(vq.parameters(), lr=1e-3, betas=(0.9, 0.99))
    vq_step(vq, optimizer, seed=0)
    vq_step(vq, optimizer, seed=1)
    extra = {"usage": torch.arange(64.0)}
    rng = torch.get_rng_state()
    save_checkpoint(tmp_path / "ckpt", vq, {"kind": "vq", "step": 2}, optimizer, extra=extra)
    assert (tmp_path / "ckpt" / TRAINER).is_file()
    expected = torch.rand(5)  # what the RNG gives next, after the save

    torch.manual_seed(123)  # another RNG state and a fresh optimizer on the loaded weights
    loaded = load_model(JanusVQVAE, tmp_path / "ckpt").train()
    fresh = torch.optim.Adam(loaded.parameters(), lr=0.5)
    restored = load_trainer_state(tmp_path / "ckpt", fresh)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(torch.rand(5), expected)
    assert restored.keys() == {"usage"} and torch.equal(restored["usage"], extra["usage"])
    a, b = optimizer.state_dict(), fresh.state_dict()
    assert a["state"].keys() == b["state"].keys() and len(a["state"]) == len(list(vq.parameters()))
    for index, values in a["state"].items():
        assert values.keys() == b["state"][index].keys()
        for name, value in values.items():
            assert torch.equal(value, b["state"][index][name]), (index, name)
    assert json.loads(json.dumps(a["param_groups"])) == json.loads(json.dumps(b["param_groups"]))
    assert b["param_groups"][0]["lr"] == 1e-3

    # one more step from each gives the same weights, bit for bit
    vq_step(vq, optimizer, seed=2)
    vq_step(loaded, fresh, seed=2)
    assert_same_weights(loaded, vq)


def test_trainer_state_missing_or_corrupt(saved):
    directory, vq = saved
    optimizer = torch.optim.Adam(vq.parameters())
    with pytest.raises(CheckpointError) as err:  # saved without an optimizer
        load_trainer_state(directory, optimizer)
    assert_one_line(err, TRAINER, "cannot resume")
    (directory / TRAINER).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00garbage")
    with pytest.raises(CheckpointError) as err:
        load_trainer_state(directory, optimizer)
    assert_one_line(err, TRAINER, "corrupt")


def test_hub_id_without_the_hub(monkeypatch):
    """A source that is no folder is tried as a hub id; offline, that is a one-line error too."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError) as err:
        load_model(JanusVQVAE, "nobody-here/no-such-model")
    assert_one_line(err, "nobody-here/no-such-model", "tried as a hub id")
