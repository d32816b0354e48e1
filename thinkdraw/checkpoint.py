"""Checkpoints: one directory per checkpoint, never pickle.

    DIR/config.json, DIR/model.safetensors   transformers' save_pretrained (from_pretrained loads it)
    DIR/tokenizer*.json                      the text tokenizer, for policies
    DIR/thinkdraw.json                       what it is, run config, step, metrics, versions
    DIR/trainer.safetensors                  optimizer tensors, the torch RNG state and any extra
                                             training state a loop needs (to resume exactly)

Writes go to DIR.tmp and are renamed into place, so an interrupted save never leaves a
half-written checkpoint where a good one was (one that stops between the two renames is
completed by `finish_interrupted_save`, which --resume runs). Loading is strict: a missing, unexpected or
mis-shaped weight is an error, as is a missing or corrupt file.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from thinkdraw.errors import ThinkdrawError

META = "thinkdraw.json"
HUB_ID = re.compile(r"[\w-]+/[\w.-]+")  # owner/name, as on the hub
TRAINER = "trainer.safetensors"


class CheckpointError(ThinkdrawError):
    pass


def save_checkpoint(
    directory: Path,
    model,
    meta: dict,
    optimizer: torch.optim.Optimizer | None = None,
    tokenizer=None,
    extra: dict[str, torch.Tensor] | None = None,
) -> None:
    """`extra`: tensors of training state beyond the optimizer (saved with it, returned by load_trainer_state)."""
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
        tensors.update({f"extra.{name}": value.detach().contiguous() for name, value in (extra or {}).items()})
        save_file(tensors, str(tmp / TRAINER))
        meta["optimizer"] = scalars
    (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def finish_interrupted_save(directory: Path) -> bool:
    """Whether DIR holds a checkpoint, once a save that stopped between its two renames (DIR already moved
    to DIR.old, DIR.tmp not yet in place) is completed: a complete DIR.tmp (thinkdraw.json is written last)
    takes the place of DIR, else DIR.old goes back."""
    directory = Path(directory)
    if not directory.exists():
        tmp, old = directory.with_name(directory.name + ".tmp"), directory.with_name(directory.name + ".old")
        if (tmp / META).is_file():
            tmp.rename(directory)
            shutil.rmtree(old, ignore_errors=True)
        elif old.is_dir():
            old.rename(directory)
    return directory.is_dir()


# What thinkdraw.json holds only to resume a run: the optimizer's state, a GRPO or DPO run's unfinished batch
RESUME_STATE = ("optimizer", "grpo", "dpo")


def export_checkpoint(
    source: Path,
    target: Path,
    dtype: torch.dtype = torch.float16,
    cfg_scale: float | None = None,
    plan_cfg_scale: float | None = None,
    plan_temperature: float | None = None,
) -> None:
    """A copy to ship: the weights in `dtype` (loading casts them back), no state for resuming (RESUME_STATE).
    Works for the VQ and for policies (the kind is read from the checkpoint's thinkdraw.json). For a policy, the
    sampling generation uses by default (None keeps the source's): `cfg_scale` (generation_config.guidance_scale),
    and after a plan with boxes `plan_cfg_scale` and `plan_temperature` (.plan_guidance_scale and
    .plan_image_temperature, the image tokens' temperature).

    A patch-local VQ keeps its encoder side (encoder, quant_conv, codebook) in float32: its codes sit
    close together (the nearest pair of patches at cosine 0.99998), and rounding those weights to
    fp16 moved tokens enough that the round trip fell from 99.8% to 91% of objects read right."""
    from transformers import AutoTokenizer, JanusForConditionalGeneration, JanusVQVAE

    meta = read_meta(source)
    cls = JanusVQVAE if meta.get("kind") == "vq" else JanusForConditionalGeneration
    model = load_model(cls, source, dtype=torch.float32)
    vq = model if cls is JanusVQVAE else model.model.vqmodel
    exact = [vq.encoder, vq.quant_conv, vq.quantize] if getattr(vq.config, "patch_local", False) else []
    originals = [[p.detach().clone() for p in part.parameters()] for part in exact]
    model.to(dtype)
    for part, tensors in zip(exact, originals, strict=True):
        for param, original in zip(part.float().parameters(), tensors, strict=True):
            param.data = original
    tokenizer = AutoTokenizer.from_pretrained(source) if (Path(source) / "tokenizer.json").is_file() else None
    if cls is JanusForConditionalGeneration:
        defaults = (
            ("guidance_scale", "cfg_scale", cfg_scale),
            ("plan_guidance_scale", "plan_cfg_scale", plan_cfg_scale),
            ("plan_image_temperature", "plan_temperature", plan_temperature),
        )
        for key, name, value in defaults:
            if value is not None:
                setattr(model.generation_config, key, value)
                meta[name] = value
        # transformers drops a generation config's own keys (plan_*) when it says it was made from the
        # model config; it is ours now
        model.generation_config._from_model_config = False
    save_checkpoint(target, model, shipped_meta(meta, dtype), tokenizer=tokenizer)


def shipped_meta(meta: dict, dtype: torch.dtype) -> dict:
    """An exported copy's thinkdraw.json: the source's, less what only resuming needs, with the dtype shipped."""
    kept = {k: v for k, v in meta.items() if k not in RESUME_STATE}
    return {**kept, "exported_dtype": str(dtype).removeprefix("torch.")}


def read_meta(directory: Path) -> dict:
    path = Path(directory) / META
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a thinkdraw checkpoint (no {META})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: corrupt ({err.msg})") from None


def load_model(cls, source: str | Path, **kwargs):
    """cls.from_pretrained(source), strict: every weight present, known and of the right shape.

    `source` is a local checkpoint folder or, when no such path exists, a hub id (Janus-Pro for users
    with the weights; it needs the hub or a local hub cache)."""
    local = Path(source)
    if not local.exists() and not HUB_ID.fullmatch(str(source)):
        raise CheckpointError(f"{source}: no checkpoint here (no such folder)")
    if local.exists() and not (local / "config.json").is_file():
        raise CheckpointError(f"{source}: no checkpoint here (config.json missing)")
    where = str(source) if local.exists() else f"{source} (no such folder; tried as a hub id)"
    try:
        found = cls.config_class.get_config_dict(str(source))[0].get("model_type")
    except (OSError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{where}: cannot read config.json ({_first_line(err)})") from None
    expected = cls.config_class.model_type
    if found != expected:  # checked first: transformers would build a default-sized model from the wrong config
        raise CheckpointError(f"{source}: holds a {found!r} model, not the {expected!r} model asked for")
    try:
        model, info = cls.from_pretrained(str(source), output_loading_info=True, **kwargs)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        raise CheckpointError(f"{where}: cannot load checkpoint ({_first_line(err)})") from None
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        raise CheckpointError(f"{source}: checkpoint does not match the model: {problems}")
    return model


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else err.__class__.__name__


def load_trainer_state(directory: Path, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Restore optimizer state and the torch RNG saved by save_checkpoint; return the `extra` tensors saved."""
    path = Path(directory) / TRAINER
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {TRAINER}, cannot resume")
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{path}: corrupt ({err})") from None
    torch.set_rng_state(tensors.pop("rng.torch"))
    extra = {key.removeprefix("extra."): tensors.pop(key) for key in list(tensors) if key.startswith("extra.")}
    optimizer.load_state_dict(_unflatten_optimizer(tensors, read_meta(directory)["optimizer"]))
    return extra


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
