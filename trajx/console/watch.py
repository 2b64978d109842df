"""Progress on stderr: a job's while the client waits for it, a file's while it moves."""

from collections.abc import Callable
from typing import Any, Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from trajx.client.api import Client
from trajx.client.models import Job
from trajx.console.readable import percent, progress_text


class LatestMetrics:
    """`latest(job)`: the metrics of the job's newest progress event (reads only new events)."""

    def __init__(self, client: Client, job_id: str) -> None:
        self.client = client
        self.job_id = job_id
        self._after: int | None = None
        self._metrics: dict[str, Any] | None = None

    def __call__(self, job: Job) -> dict[str, Any] | None:
        if job.status != "queued":
            for event in self.client.events(self.job_id, after=self._after):
                self._after = int(event.id)
                if event.type == "progress" and event.data:
                    self._metrics = event.data.get("metrics") or self._metrics
        return self._metrics


def bar_fields(job: Job, metrics: dict[str, Any] | None) -> dict[str, Any]:
    """What the job bar shows: `queued` (no step count yet) or `step/total`, and the accuracy."""
    total = job.progress.total if job.progress else None
    accuracy = (metrics or {}).get("accuracy")
    return {"description": f"{job.id} {job.status}", "total": total or None,
            "completed": (job.progress.step if job.progress else None) or 0,
            "progress": progress_text(job) or job.status,
            "accuracy": f"acc {percent(accuracy)}" if isinstance(accuracy, int | float) else ""}


class JobWatcher:
    """`on_update(job)` for `Client.wait`: a live bar on a terminal (step/total, the newest
    held-out accuracy, elapsed time and ETA), status lines otherwise."""

    def __init__(self, console: Console, metrics: Callable[[Job], dict[str, Any] | None] | None = None) -> None:
        self.console = console
        self.metrics = metrics
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._last_status: str | None = None

    def __enter__(self) -> Self:
        if self.console.is_terminal:
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[progress]}"),
                                 TextColumn("{task.fields[accuracy]}"), TimeElapsedColumn(), TextColumn("eta"),
                                 TimeRemainingColumn(), console=self.console, transient=True)
            self._bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def on_update(self, job: Job) -> None:
        if self._bar is None:
            # Logs (CI): one line per status change keeps them short and readable.
            if job.status != self._last_status:
                self.console.print(f"{job.id}: {job.status}")
        else:
            fields = bar_fields(job, self.metrics(job) if self.metrics else None)
            if self._task is None:
                self._task = self._bar.add_task(**fields)
            else:
                self._bar.update(self._task, **fields)
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
