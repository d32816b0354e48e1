"""Checkpoints: one directory per checkpoint, never pickle.

    DIR/config.json, DIR/model.safetensors   transformers' save_pretrained (from_pretrained loads it)
    DIR/tokenizer*.json                      the text tokenizer, for policies
    DIR/thinkdraw.json                       what it is, run config, step, metrics, versions
    DIR/trainer.safetensors                  optimizer tensors and the torch RNG state (to resume)

Writes go to DIR.tmp and are renamed into place, so an interrupted save never leaves a
half-written checkpoint where a good one was. Loading is strict: a missing, unexpected or
mis-shaped weight is an error, as is a missing or corrupt file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from thinkdraw.errors import ThinkdrawError

META = "thinkdraw.json"
TRAINER = "trainer.safetensors"


class CheckpointError(ThinkdrawError):
    pass


def save_checkpoint(
    directory: Path, model, meta: dict, optimizer: torch.optim.Optimizer | None = None, tokenizer=None
) -> None:
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    meta = dict(meta)
    if optimizer is not None:
        tensors, scalars = _flatten_optimizer(optimizer)
        tensors["rng.torch"] = torch.get_rng_state()
        save_file(tensors, str(tmp / TRAINER))
        meta["optimizer"] = scalars
    (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def read_meta(directory: Path) -> dict:
    path = Path(directory) / META
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a thinkdraw checkpoint (no {META})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: corrupt ({err.msg})") from None


def load_model(cls, directory: Path, **kwargs):
    """cls.from_pretrained(directory), strict: every weight present, known and of the right shape."""
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise CheckpointError(f"{directory}: no checkpoint here (config.json missing)")
    try:
        model, info = cls.from_pretrained(directory, output_loading_info=True, **kwargs)
    except (OSError, ValueError, RuntimeError, json.JSONDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise CheckpointError(f"{directory}: cannot load checkpoint ({first})") from None
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        raise CheckpointError(f"{directory}: checkpoint does not match the model: {problems}")
    return model


def load_trainer_state(directory: Path, optimizer: torch.optim.Optimizer) -> None:
    """Restore optimizer state and the torch RNG saved by save_checkpoint."""
    path = Path(directory) / TRAINER
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {TRAINER}, cannot resume")
    tensors = load_file(str(path))
    torch.set_rng_state(tensors.pop("rng.torch"))
    optimizer.load_state_dict(_unflatten_optimizer(tensors, read_meta(directory)["optimizer"]))


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {"param_groups": state["param_groups"], "state": {}}
    for index, values in state["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{name}"] = value.contiguous()
            else:
                scalars["state"].setdefault(str(index), {})[name] = value
    return tensors, scalars


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], scalars: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, values in scalars["state"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": scalars["param_groups"]}
