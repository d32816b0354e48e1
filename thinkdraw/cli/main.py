"""The thinkdraw command line."""

from __future__ import annotations

import typer
from transformers.utils import logging as hf_logging

from thinkdraw.cli import eval_cmds, generate_cmds, train_cmds, world_cmds
from thinkdraw.cli.config import add_command

app = typer.Typer(
    help="Make autoregressive text-to-image models think before they draw, check their work, and train them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
add_command(app, "generate", generate_cmds.GenerateConfig, generate_cmds.generate)
app.add_typer(world_cmds.app, name="world")
app.add_typer(eval_cmds.app, name="eval")
app.add_typer(train_cmds.app, name="train")


def main() -> None:
    hf_logging.disable_progress_bar()
    app()
