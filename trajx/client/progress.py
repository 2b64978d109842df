"""Byte progress bars on stderr for uploads and downloads (rich, optional)."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


@contextmanager
def byte_progress(description: str, total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n_bytes)`; draws a bar on stderr only when enabled and a terminal."""
    console = Console(stderr=True)
    if not (enabled and console.is_terminal):
        yield lambda n: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
