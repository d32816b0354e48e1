"""`thinkdraw train ...`: the training recipes."""

from __future__ import annotations

import typer

from thinkdraw.cli.config import add_command
from thinkdraw.configs import (
    ExportConfig,
    TrainDetectorConfig,
    TrainDPOConfig,
    TrainGRPOConfig,
    TrainJudgeConfig,
    TrainPolicyConfig,
    TrainVQConfig,
)

app = typer.Typer(help="Train the world model's parts.", no_args_is_help=True)


def vq(config: TrainVQConfig) -> None:
    from thinkdraw.trainers.common import format_metrics
    from thinkdraw.world.train_vq import roundtrip_accuracy, train_vq

    model = train_vq(config, echo=typer.echo)
    typer.echo("round trip: " + format_metrics(roundtrip_accuracy(model)))


def policy(config: TrainPolicyConfig) -> None:
    from thinkdraw.world.data import train_world_policy

    train_world_policy(config, echo=typer.echo)


def grpo(config: TrainGRPOConfig) -> None:
    from thinkdraw.world.data import train_world_grpo

    train_world_grpo(config, echo=typer.echo)


def dpo(config: TrainDPOConfig) -> None:
    from thinkdraw.world.data import train_world_dpo

    train_world_dpo(config, echo=typer.echo)


def judge(config: TrainJudgeConfig) -> None:
    from thinkdraw.world.judge_data import train_world_judge

    train_world_judge(config, echo=typer.echo)


def detector(config: TrainDetectorConfig) -> None:
    from thinkdraw.world.learned_detector import train_world_detector

    train_world_detector(config, echo=typer.echo)


def export(config: ExportConfig) -> None:
    import torch

    from thinkdraw.checkpoint import export_checkpoint, read_meta
    from thinkdraw.errors import ThinkdrawError

    dtype = getattr(torch, config.dtype)
    kind = read_meta(config.checkpoint).get("kind")
    sampling = (config.cfg_scale, config.plan_cfg_scale, config.plan_temperature)
    if kind in ("judge", "detector") and any(value is not None for value in sampling):
        raise ThinkdrawError(f"--cfg-scale, --plan-cfg-scale and --plan-temperature are for policies, not a {kind}")
    if kind == "judge":
        _export_judge(config, dtype)
    elif kind == "detector":
        _export_detector(config, dtype)
    else:
        export_checkpoint(config.checkpoint, config.out, dtype, *sampling)
    size = sum(f.stat().st_size for f in config.out.iterdir()) / 2**20
    typer.echo(f"wrote {config.out} ({config.dtype}, {size:.1f} MiB)")


def _export_judge(config: ExportConfig, dtype) -> None:
    """A chat judge's copy to ship: its model in `dtype` and its processor, no state for resuming."""
    from thinkdraw.checkpoint import read_meta, save_checkpoint, shipped_meta
    from thinkdraw.judges.vlm import VLMChat

    chat = VLMChat.load(str(config.checkpoint))
    meta = shipped_meta(read_meta(config.checkpoint), dtype)
    save_checkpoint(config.out, chat.model.to(dtype), meta, tokenizer=chat.processor)


def _export_detector(config: ExportConfig, dtype) -> None:
    """The learned detector's copy to ship: its weights in `dtype` (it runs in float32), no state for resuming."""
    from thinkdraw.checkpoint import load_model, read_meta, save_checkpoint, shipped_meta
    from thinkdraw.world.learned_detector import DetectorNet

    meta = shipped_meta(read_meta(config.checkpoint), dtype)
    save_checkpoint(config.out, load_model(DetectorNet, config.checkpoint).to(dtype), meta)


add_command(app, "vq", TrainVQConfig, vq)
add_command(app, "policy", TrainPolicyConfig, policy)
add_command(app, "grpo", TrainGRPOConfig, grpo)
add_command(app, "dpo", TrainDPOConfig, dpo)
add_command(app, "judge", TrainJudgeConfig, judge)
add_command(app, "detector", TrainDetectorConfig, detector)
add_command(app, "export", ExportConfig, export)
