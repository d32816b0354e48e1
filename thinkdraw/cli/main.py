"""The thinkdraw command line."""

from __future__ import annotations

import os

import typer

from thinkdraw.cli import eval_cmds, generate_cmds, judge_cmds, train_cmds, world_cmds
from thinkdraw.cli.config import add_command
from thinkdraw.configs import GenerateConfig, ServeJudgeConfig

app = typer.Typer(
    help="Make autoregressive text-to-image models think before they draw, check their work, and train them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
add_command(app, "generate", GenerateConfig, generate_cmds.generate)
add_command(app, "serve-judge", ServeJudgeConfig, judge_cmds.serve_judge)
app.add_typer(world_cmds.app, name="world")
app.add_typer(eval_cmds.app, name="eval")
app.add_typer(train_cmds.app, name="train")


def main() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    app()
