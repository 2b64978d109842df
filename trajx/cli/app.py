"""The one Typer application every `trajx` sub-command registers on."""

from typing import Annotated

import typer

from trajx.version import __version__

app = typer.Typer(
    name="trajx",
    help="Transfer a learning trajectory to a new initialization (GMT/FGMT).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"trajx {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = False) -> None:
    """Transfer a learning trajectory to a new initialization (GMT/FGMT)."""
