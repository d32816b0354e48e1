"""`thinkdraw train ...`: the training recipes."""

from __future__ import annotations

import typer

from thinkdraw.cli.config import add_command
from thinkdraw.trainers.common import format_metrics
from thinkdraw.trainers.sft import TrainPolicyConfig, train_policy
from thinkdraw.trainers.vq import TrainVQConfig, roundtrip_accuracy, train_vq

app = typer.Typer(help="Train the world model's parts.", no_args_is_help=True)


def vq(config: TrainVQConfig) -> None:
    model = train_vq(config, echo=typer.echo)
    report = roundtrip_accuracy(model)
    typer.echo("round trip: " + format_metrics(report))


def policy(config: TrainPolicyConfig) -> None:
    train_policy(config, echo=typer.echo)


add_command(app, "vq", TrainVQConfig, vq)
add_command(app, "policy", TrainPolicyConfig, policy)
