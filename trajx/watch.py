"""Progress on stderr: a job's while the client waits for it, a file's while it moves."""

from typing import Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from trajx.client.models import Job


class JobWatcher:
    """`on_update(job)` for `Client.wait`: a live bar on a terminal, status lines otherwise."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._bar: Progress | None = None
        self._task = None
        self._last_status: str | None = None

    def __enter__(self) -> Self:
        if self.console.is_terminal:
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console, transient=True)
            self._bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def on_update(self, job: Job) -> None:
        step = (job.progress.step if job.progress else None) or 0
        total = job.progress.total if job.progress else None
        if self._bar is None:
            # Logs (CI): one line per status change keeps them short and readable.
            if job.status != self._last_status:
                self.console.print(f"{job.id}: {job.status}")
        elif self._task is None:
            self._task = self._bar.add_task(f"{job.id} {job.status}", total=total, completed=step)
        else:
            self._bar.update(self._task, description=f"{job.id} {job.status}", total=total, completed=step)
        self._last_status = job.status


class TransferBars:
    """The client's `progress` callback: a byte bar per file on a terminal, nothing otherwise.

    A bar is live only while its file moves, so it never overlaps the JobWatcher's
    (rich allows one live display at a time).
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._description: str | None = None

    def __call__(self, description: str, done: int, total: int) -> None:
        if not self.console.is_terminal:
            return
        if self._bar is None or description != self._description:
            self.close()
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=self.console,
                                 transient=True)
            self._bar.start()
            self._task, self._description = self._bar.add_task(description, total=total), description
        self._bar.update(self._task, completed=done, total=total)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = self._task = self._description = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
