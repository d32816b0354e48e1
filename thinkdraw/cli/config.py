"""Build typer commands from config dataclasses (one dataclass per command, `thinkdraw.configs`).

A field's metadata carries its help text (and, optionally, a short flag or that it is
positional); a nested config dataclass's fields become options too; the dataclass's __post_init__
validates. A ThinkdrawError anywhere in a command, config or run, is printed as one line on stderr and
exits with code 2.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from thinkdraw.configs import option
from thinkdraw.errors import ThinkdrawError

__all__ = ["add_command", "fail", "option"]


def fail(message: str) -> typing.NoReturn:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def _parameter(f: dataclasses.Field, annotation: Any) -> inspect.Parameter:
    help_text = f.metadata.get("help", "")
    if f.metadata.get("argument"):
        marker = typer.Argument(help=help_text, show_default=False)
    else:
        flags = [f"--{f.name.replace('_', '-')}"]
        if annotation is bool:
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
    return inspect.Parameter(
        f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[annotation, marker]
    )


def add_command(app: typer.Typer, name: str, config_cls: type, run: Callable[[Any], None]) -> None:
    """Register `run(config_cls(**cli_args))` as `name`; the help is config_cls's docstring."""
    hints = typing.get_type_hints(config_cls)
    params, groups = [], {}
    own = set(vars(config_cls).get("__annotations__", {}))  # the class's own options first, then inherited ones
    for f in sorted(dataclasses.fields(config_cls), key=lambda f: f.name not in own):
        if f.metadata.get("nested"):
            inner = hints[f.name]
            inner_hints = typing.get_type_hints(inner)
            groups[f.name] = (inner, [g.name for g in dataclasses.fields(inner)])
            params += [_parameter(g, inner_hints[g.name]) for g in dataclasses.fields(inner)]
        else:
            params.append(_parameter(f, hints[f.name]))

    def command(**kwargs: Any) -> None:
        try:
            for field_name, (inner, names) in groups.items():
                kwargs[field_name] = inner(**{n: kwargs.pop(n) for n in names})
            run(config_cls(**kwargs))
        except ThinkdrawError as err:
            fail(str(err))
        except KeyboardInterrupt:
            typer.secho("interrupted", err=True)
            sys.exit(130)

    command.__signature__ = inspect.Signature(params)
    command.__doc__ = inspect.getdoc(config_cls)
    app.command(name)(command)
