"""The one Typer application every `trajx` sub-command registers on."""

from typing import Annotated

import typer

from trajx.version import __version__

# Typer labels every option with its type, flags too (`--wait <bool>`): a flag takes no value.
_display_type = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag else _display_type(self, ctx)

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
