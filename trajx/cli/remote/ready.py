"""`trajx ready`: wait until a server answers, so a script can start `trajx serve &` and go
on without racing its first start (the local key file is written before it answers)."""

import time
from typing import Annotated

import httpx
import typer

from trajx.cli.app import app
from trajx.client.config import is_loopback, local_key_path, resolve_url
from trajx.client.errors import EXIT_UNREACHABLE

POLL_SECONDS = 0.25


@app.command()
def ready(url: Annotated[str | None, typer.Option("--url", envvar="TRAJX_URL", show_envvar=True,
                                                  help="Server URL (default: http://127.0.0.1:8000)")] = None,
          timeout: Annotated[float, typer.Option("--timeout", min=0, help="Give up after S seconds (exit 5).")]
          = 60.0,
          print_key: Annotated[bool, typer.Option("--print-key", help="Then print the local API key "
                                                  "(a `trajx serve` on this machine).")] = False) -> None:
    """Wait until the server is ready (`/readyz`); exit 5 if it is not within --timeout."""
    base = resolve_url(url)
    deadline = time.monotonic() + timeout
    while not _answers(base):
        if time.monotonic() >= deadline:
            typer.echo(f"error: {base} was not ready within {timeout:g} s (is `trajx serve` running?)", err=True)
            raise typer.Exit(EXIT_UNREACHABLE)
        time.sleep(POLL_SECONDS)
    if print_key:
        path = local_key_path()
        if not is_loopback(base) or not path.is_file():
            typer.echo(f"error: no local key file at {path} (TRAJX_DATA_DIR names the server's data dir)", err=True)
            raise typer.Exit(2)
        typer.echo(path.read_text().strip())


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False
