"""The ``refine`` command: a typer app whose commands live one per module."""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from .._version import __version__

try:  # typer >= 0.19 carries its own copy of click
    from typer import _click as click
except ImportError:  # pragma: no cover - older typer on top of click
    import click


class OneLineErrors(TyperGroup):
    """Usage mistakes (an unknown option, a value that is not a number) answered the way every
    other error is: one ``error:`` line on stderr and exit code 2, no usage box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:
            typer.echo(e.ctx.get_help() if e.ctx is not None else str(e))
            sys.exit(2)
        except click.ClickException as e:
            message = " ".join(e.format_message().split())
            typer.echo(
                f"error: {message}"
                + (f" (see '{e.ctx.command_path} --help')" if getattr(e, "ctx", None) is not None else ""),
                err=True,
            )
            sys.exit(e.exit_code)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)


app = typer.Typer(
    name="refine",
    cls=OneLineErrors,
    help="Refine GAN samples with density ratios: rejection (rs, drs), MH-GAN, SIR and gradient methods.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"refine {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="print refine's version and exit"
    ),
) -> None:
    """Refine GAN samples with density ratios: rejection (rs, drs), MH-GAN, SIR and gradient methods."""
