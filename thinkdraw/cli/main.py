"""The thinkdraw command line."""

from __future__ import annotations

import typer

from thinkdraw.cli import eval_cmds, world_cmds

app = typer.Typer(
    help="Make autoregressive text-to-image models think before they draw, check their work, and train them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(world_cmds.app, name="world")
app.add_typer(eval_cmds.app, name="eval")


def main() -> None:
    app()
