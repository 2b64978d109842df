"""The one Typer application every `trajx` sub-command registers on."""

import typer

app = typer.Typer(
    name="trajx",
    help="Transfer a learning trajectory to a new initialization (GMT/FGMT).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
