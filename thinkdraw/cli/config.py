"""Build typer commands from config dataclasses (one dataclass per command).

A field's metadata carries its help text (and, optionally, a short flag or that it is
positional); the dataclass's __post_init__ validates. A ThinkdrawError anywhere in a
command, config or run, is printed as one line on stderr and exits with code 2.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from thinkdraw.errors import ThinkdrawError


def option(default: Any = dataclasses.MISSING, help: str = "", short: str | None = None, argument: bool = False):
    """A config field with CLI help. `argument=True` makes it positional."""
    meta = {"help": help, "short": short, "argument": argument}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def fail(message: str) -> typing.NoReturn:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def add_command(app: typer.Typer, name: str, config_cls: type, run: Callable[[Any], None]) -> None:
    """Register `run(config_cls(**cli_args))` as `name`; the help is config_cls's docstring."""
    hints = typing.get_type_hints(config_cls)
    params = []
    for f in dataclasses.fields(config_cls):
        help_text = f.metadata.get("help", "")
        if f.metadata.get("argument"):
            marker = typer.Argument(help=help_text, show_default=False)
        else:
            flags = [f"--{f.name.replace('_', '-')}"]
            if hints[f.name] is bool:
                flags = [f"--{f.name.replace('_', '-')}/--no-{f.name.replace('_', '-')}"]
            if f.metadata.get("short"):
                flags.append(f.metadata["short"])
            marker = typer.Option(*flags, help=help_text)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = inspect.Parameter.empty
        params.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[hints[f.name], marker]
            )
        )

    def command(**kwargs: Any) -> None:
        try:
            run(config_cls(**kwargs))
        except ThinkdrawError as err:
            fail(str(err))
        except KeyboardInterrupt:
            typer.secho("interrupted", err=True)
            sys.exit(130)

    command.__signature__ = inspect.Signature(params)
    command.__doc__ = inspect.getdoc(config_cls)
    app.command(name)(command)
