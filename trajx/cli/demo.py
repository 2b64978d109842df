"""`trajx demo`: the service end to end on this machine (embedded default, digits MLP)."""

from pathlib import Path
from typing import Annotated

import typer

from trajx.cli.app import app
from trajx.client.errors import ClientError


@app.command()
def demo(seeds: Annotated[list[int], typer.Option("--seed", help="Target seeds (repeat the option).")] = [1, 2, 3],  # noqa: B006
         steps: Annotated[int, typer.Option("--steps", min=1, max=1000, help="T, points on the trajectory.")] = 30,
         data_dir: Annotated[Path | None, typer.Option(
             "--data-dir", help="Keep source, server data and results here (default: a temp dir).")] = None,
         keep_serving: Annotated[bool, typer.Option(
             "--keep-serving", help="Keep the demo server (and its dashboard) up until Ctrl-C.")] = False,
         port: Annotated[int | None, typer.Option(
             "--port", min=1, max=65535, help="Port of the demo server (default: a free one).")] = None) -> None:
    """Start `trajx serve`, train a source MLP on digits, transfer it to new seeds (Naive, FGMT), print a table."""
    from trajx.demo.run import run_demo  # torch loads here, not when the CLI starts

    try:
        run_demo(tuple(seeds), steps, data_dir, keep_serving=keep_serving, port=port)
    except ClientError as exc:  # the API refused a call, or the server went away mid-demo
        typer.echo(f"demo failed talking to its server: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from exc
    except RuntimeError as exc:  # the server did not start, or a job did not succeed
        typer.echo(f"demo failed: {exc}", err=True)
        raise typer.Exit(1) from exc
